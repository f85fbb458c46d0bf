//! The scheduling priority of the threads that evaluate large reviews.
//!
//! They run under the idle policy (`SCHED_IDLE`): whenever another thread of the process
//! wakes with work (an async worker with a small review or a probe), the kernel gives it the
//! CPU at once. At the normal policy (or with a higher nice value), a woken worker that found
//! both cores of a 2-core machine taken by large reviews waited for the scheduler's next tick
//! (4 ms at 250 Hz; in traces, up to 7 ms). Measured in the README, Performance.
//!
//! Under the idle policy a thread gets only what the process's other threads leave of the
//! CPUs it may use: a large review waits while the small ones keep every core busy.

use std::cell::Cell;

thread_local! {
    /// Whether this thread has asked for the idle policy already.
    static LOWERED: Cell<bool> = const { Cell::new(false) };
}

/// Puts the calling thread under the idle scheduling policy, once per thread. Without
/// privileges a thread cannot return to the normal policy, so it keeps it for whatever it
/// runs later: these are threads of the runtime's blocking pool, which also evaluate the
/// other large reviews and load the policy file. Where the system refuses the policy (a
/// seccomp profile that forbids it), the review runs at the normal priority, and a debug
/// line says so once per thread.
pub(super) fn lower_current_thread() {
    if LOWERED.replace(true) {
        return;
    }
    #[cfg(target_os = "linux")]
    if let Err(e) = thread_priority::set_thread_priority_and_policy(
        thread_priority::thread_native_id(),
        thread_priority::ThreadPriority::Min,
        thread_priority::ThreadSchedulePolicy::Normal(
            thread_priority::NormalThreadSchedulePolicy::Idle,
        ),
    ) {
        tracing::debug!(
            target: super::LOG_TARGET,
            error = ?e,
            "the idle scheduling policy was refused; large reviews run at the normal priority"
        );
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// `SCHED_IDLE` in `<sched.h>`.
    const SCHED_IDLE: u32 = 5;

    /// The calling thread's scheduling policy, as the kernel reports it: the 41st field of
    /// `/proc/thread-self/stat`, the 39th after the command name's closing parenthesis.
    fn policy() -> u32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        let (_, fields) = stat.rsplit_once(')').expect("a command name");
        fields
            .split_whitespace()
            .nth(38)
            .and_then(|p| p.parse().ok())
            .expect("a policy")
    }

    #[test]
    fn a_lowered_thread_runs_under_the_idle_policy_and_the_others_do_not() {
        let before = policy();
        assert_ne!(before, SCHED_IDLE);
        let lowered = std::thread::spawn(|| {
            lower_current_thread();
            let once = policy();
            lower_current_thread();
            (once, policy())
        })
        .join()
        .expect("the lowered thread");
        assert_eq!(lowered, (SCHED_IDLE, SCHED_IDLE));
        assert_eq!(policy(), before, "the calling thread is not changed");
    }
}
