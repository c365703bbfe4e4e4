// mimalloc: fewer CPU cycles per allocation than glibc malloc on the consumer's hot path
// (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    umkm_runtime::main_for::<qris_consumer::Qris>()
}
