//! The `tidemark` binary: everything lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    tidemark::cli::main()
}
