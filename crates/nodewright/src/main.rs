//! The `nodewright` binary.

fn main() -> std::process::ExitCode {
    nodewright::cli::main()
}
