//! `kubectl kcert …`: the same CLI as `kcert`, found by kubectl as a plugin (an executable named
//! `kubectl-kcert` on PATH; installed by krew from plugins/kcert.yaml).
fn main() -> std::process::ExitCode {
    kcert::main(std::env::args_os())
}
