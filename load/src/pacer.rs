//! The open-loop schedule's clock. tokio's timers tick in whole milliseconds and
//! round up, so a request due at t would leave 1–2 ms late, and that lateness
//! would count against the switch (latency is measured from the intended time).
//! On Linux the pacer is a timerfd in the runtime's reactor, late by tens of
//! microseconds; elsewhere it falls back to tokio's sleep.

pub use imp::Pacer;

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::os::fd::OwnedFd;
    use std::time::{Duration, Instant};

    use rustix::time::{
        timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags,
        TimerfdTimerFlags, Timespec,
    };
    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    /// A one-shot timer that can be re-armed. Arm it with [`Pacer::arm`], then
    /// await [`Pacer::expired`]; awaiting is cancel-safe.
    pub struct Pacer {
        fd: AsyncFd<OwnedFd>,
    }

    impl Pacer {
        /// Must be called inside a tokio runtime with I/O enabled.
        pub fn new() -> io::Result<Pacer> {
            let fd = timerfd_create(
                TimerfdClockId::Monotonic,
                TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
            )?;
            // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open
            // and the same for the AsyncFd's whole life.
            let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
            Ok(Pacer { fd })
        }

        /// Fires once at `at` (at once if `at` has passed), replacing any earlier arming.
        pub fn arm(&mut self, at: Instant) -> io::Result<()> {
            // A zero value would disarm the timer: one nanosecond means "now".
            let wait = at
                .saturating_duration_since(Instant::now())
                .max(Duration::from_nanos(1));
            let value = Itimerspec {
                it_interval: Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: Timespec {
                    tv_sec: wait.as_secs() as _,
                    tv_nsec: wait.subsec_nanos() as _,
                },
            };
            timerfd_settime(self.fd.get_ref(), TimerfdTimerFlags::empty(), &value)?;
            Ok(())
        }

        /// Completes when the armed time has come.
        pub async fn expired(&mut self) -> io::Result<()> {
            loop {
                let mut ready = self.fd.readable().await?;
                let mut expirations = [0u8; 8];
                match ready.try_io(|fd| {
                    rustix::io::read(fd.get_ref(), &mut expirations).map_err(io::Error::from)
                }) {
                    Ok(Ok(_)) => return Ok(()),
                    Ok(Err(e)) => return Err(e),
                    // Readiness left over from an earlier expiry: wait again.
                    Err(_would_block) => continue,
                }
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;
    use std::pin::Pin;
    use std::time::Instant;

    /// tokio's sleep: millisecond resolution, so open-loop latency reads up to
    /// 2 ms high on this platform.
    pub struct Pacer {
        sleep: Pin<Box<tokio::time::Sleep>>,
        armed: bool,
    }

    impl Pacer {
        pub fn new() -> io::Result<Pacer> {
            Ok(Pacer {
                sleep: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
                armed: false,
            })
        }

        pub fn arm(&mut self, at: Instant) -> io::Result<()> {
            self.sleep.as_mut().reset(at.into());
            self.armed = true;
            Ok(())
        }

        pub async fn expired(&mut self) -> io::Result<()> {
            if self.armed {
                self.sleep.as_mut().await;
                self.armed = false;
                return Ok(());
            }
            std::future::pending().await
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Pacer;

    #[tokio::test]
    async fn fires_no_earlier_than_armed() {
        let mut pacer = Pacer::new().expect("timer");
        let at = Instant::now() + Duration::from_millis(3);
        pacer.arm(at).expect("arm");
        pacer.expired().await.expect("expires");
        assert!(Instant::now() >= at);
    }

    #[tokio::test]
    async fn a_time_already_past_fires_at_once_and_rearming_replaces() {
        let mut pacer = Pacer::new().expect("timer");
        pacer
            .arm(Instant::now() + Duration::from_secs(3600))
            .expect("arm");
        pacer.arm(Instant::now()).expect("re-arm");
        tokio::time::timeout(Duration::from_secs(10), pacer.expired())
            .await
            .expect("the second arming replaced the first")
            .expect("expires");
    }
}
