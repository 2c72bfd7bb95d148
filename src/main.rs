//! The `hms-guard` binary: everything lives in the library; see `hms_guard::cli`.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    hms_guard::cli::main()
}
