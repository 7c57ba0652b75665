use std::process::ExitCode;

fn main() -> ExitCode {
    elbo::cli::main()
}
