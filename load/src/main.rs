//! `loadgen`: drives ISO 8583 traffic at an isoswitch listener and reports
//! throughput and latency. The traffic model lands with the load-generator issue;
//! until then the binary says so and exits non-zero rather than pretending.
fn main() {
    eprintln!("loadgen: not built yet (see the load-generator issue); nothing was sent");
    std::process::exit(2);
}
