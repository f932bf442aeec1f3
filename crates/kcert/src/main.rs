fn main() -> std::process::ExitCode {
    kcert::main(std::env::args_os())
}
