fn main() -> std::process::ExitCode {
    umkm_runtime::main_for::<merchant_consumer::Merchants>()
}
