fn main() -> std::process::ExitCode {
    umkm_runtime::main_for::<noncash_consumer::Noncash>()
}
