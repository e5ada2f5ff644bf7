//! The async runtime every long-running command (switch, issuer simulator,
//! load generator) runs on.

/// A tokio runtime with `workers` worker threads. One worker runs every task
/// on the calling thread (tokio's current-thread scheduler): no wake-ups
/// between threads. Zero asks tokio for its default, one worker per core.
pub fn build(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match workers {
        1 => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    builder.enable_all().build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_count_gives_a_runtime_that_runs_tasks() {
        for workers in [0, 1, 2] {
            let runtime = build(workers).expect("runtime");
            let answer = runtime.block_on(async { tokio::spawn(async { 6 * 7 }).await });
            assert_eq!(answer.expect("task ran"), 42, "{workers} workers");
            let flavor = runtime.handle().runtime_flavor();
            let expected = if workers == 1 {
                tokio::runtime::RuntimeFlavor::CurrentThread
            } else {
                tokio::runtime::RuntimeFlavor::MultiThread
            };
            assert_eq!(flavor, expected, "{workers} workers");
        }
    }
}
