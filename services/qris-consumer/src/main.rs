fn main() -> std::process::ExitCode {
    umkm_runtime::main_for::<qris_consumer::Qris>()
}
