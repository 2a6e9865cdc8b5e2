//! `raftkv`: the server binary. Takes etcd's flags; with none, runs a
//! one-member cluster on 127.0.0.1:2379 with its data in ./default.raftkv.

fn main() -> std::process::ExitCode {
    raftkv_server::cli::main()
}
