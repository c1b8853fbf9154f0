//! meshwrap's command-line entry point; everything lives in the library.

fn main() {
    std::process::exit(meshwrap::cli::main());
}
