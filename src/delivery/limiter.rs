//! How many requests one destination may have in flight, and when it must not
//! send at all.
//!
//! Additive increase, multiplicative decrease, as TCP and Vector's adaptive
//! request concurrency do: the limit grows by one after a window of `limit`
//! answers that were all accepted, and halves (at most once per `cooldown`) on
//! back-pressure: a `429`, a `5xx`, a timeout or a network error. It never exceeds
//! the configured maximum and never drops below one. A `Retry-After` (or a 429)
//! pauses the whole destination, every lane, until it passes: for the time
//! Mixpanel gave, else for a pause that starts at [`THROTTLE_PAUSE`] and doubles
//! with each throttle in a row (up to the backoff maximum), reset by a success.

use std::time::Duration;

use tokio::time::Instant;

/// The first pause of a throttle without `Retry-After`.
pub const THROTTLE_PAUSE: Duration = Duration::from_millis(250);

/// What an answer says about Mixpanel's capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Accepted (or rejected for the records' own sake: not back-pressure).
    Ok,
    /// 5xx, timeout, unreachable.
    Overloaded,
    /// A 429 or a `Retry-After`: wait as long as Mixpanel said, if it did.
    Throttled(Option<Duration>),
}

/// The adaptive concurrency limit of one destination.
#[derive(Debug)]
pub struct Limiter {
    max: usize,
    limit: f64,
    in_flight: usize,
    successes: usize,
    last_decrease: Option<Instant>,
    cooldown: Duration,
    paused_until: Option<Instant>,
    /// Throttles since the last success, and the longest pause they may reach.
    throttles: u32,
    max_pause: Duration,
}

impl Limiter {
    /// Starts at half the maximum (at least one) and probes upwards; a
    /// throttle without `Retry-After` pauses at most `max_pause`.
    pub fn new(max: usize, cooldown: Duration, max_pause: Duration) -> Limiter {
        let max = max.max(1);
        Limiter {
            max,
            limit: max.div_ceil(2) as f64,
            in_flight: 0,
            successes: 0,
            last_decrease: None,
            cooldown,
            paused_until: None,
            throttles: 0,
            max_pause: max_pause.max(THROTTLE_PAUSE),
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        (self.limit.floor() as usize).clamp(1, self.max)
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// When sending is paused, until when.
    pub fn paused_until(&self, now: Instant) -> Option<Instant> {
        self.paused_until.filter(|&at| at > now)
    }

    /// Whether one more request may start now.
    pub fn may_send(&self, now: Instant) -> bool {
        self.may_send_n(1, now)
    }

    /// Whether `n` more requests may start now (a lone group larger than the
    /// limit may start when nothing is in flight, or it would never start).
    pub fn may_send_n(&self, n: usize, now: Instant) -> bool {
        self.paused_until(now).is_none() && (self.in_flight + n <= self.limit() || self.in_flight == 0)
    }

    /// A request starts.
    pub fn start(&mut self) {
        self.start_n(1);
    }

    /// `n` requests start together.
    pub fn start_n(&mut self, n: usize) {
        self.in_flight += n;
    }

    /// A request ended with this signal.
    pub fn finish(&mut self, signal: Signal, now: Instant) {
        self.finish_n(1, signal, now);
    }

    /// `n` requests started together ended with this signal.
    pub fn finish_n(&mut self, n: usize, signal: Signal, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(n);
        match signal {
            Signal::Ok => {
                self.throttles = 0;
                self.successes += 1;
                if self.successes >= self.limit() {
                    self.successes = 0;
                    self.limit = (self.limit + 1.0).min(self.max as f64);
                }
            }
            Signal::Overloaded => self.decrease(now),
            Signal::Throttled(given) => {
                self.decrease(now);
                // Requests in flight when a pause began are answered during it:
                // their throttles are the same one, and do not lengthen it.
                if self.paused_until(now).is_some() && given.is_none() {
                    return;
                }
                let wait = given.unwrap_or_else(|| {
                    let doubled = THROTTLE_PAUSE.saturating_mul(1 << self.throttles.min(16));
                    doubled.min(self.max_pause)
                });
                self.throttles = self.throttles.saturating_add(1);
                let until = now + wait;
                if self.paused_until.is_none_or(|at| at < until) {
                    self.paused_until = Some(until);
                }
            }
        }
    }

    fn decrease(&mut self, now: Instant) {
        self.successes = 0;
        let recent = self
            .last_decrease
            .is_some_and(|at| now.saturating_duration_since(at) < self.cooldown);
        if !recent {
            self.limit = (self.limit / 2.0).max(1.0);
            self.last_decrease = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_by_one_per_window_of_successes_up_to_the_max() {
        let now = Instant::now();
        let mut l = Limiter::new(4, Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(l.limit(), 2);
        for _ in 0..2 {
            l.start();
            l.finish(Signal::Ok, now);
        }
        assert_eq!(l.limit(), 3);
        for _ in 0..100 {
            l.start();
            l.finish(Signal::Ok, now);
        }
        assert_eq!(l.limit(), 4);
    }

    #[test]
    fn halves_once_per_cooldown_and_never_below_one() {
        let now = Instant::now();
        let mut l = Limiter::new(16, Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(l.limit(), 8);
        l.start();
        l.finish(Signal::Overloaded, now);
        assert_eq!(l.limit(), 4);
        // A burst of failures answered together counts once.
        l.start();
        l.finish(Signal::Overloaded, now + Duration::from_millis(10));
        assert_eq!(l.limit(), 4);
        for i in 0..10u64 {
            l.start();
            l.finish(Signal::Overloaded, now + Duration::from_secs(2 + i * 2));
        }
        assert_eq!(l.limit(), 1);
    }

    #[test]
    fn a_throttle_pauses_every_request_until_it_passes() {
        let now = Instant::now();
        let mut l = Limiter::new(8, Duration::from_secs(1), Duration::from_secs(60));
        l.start();
        l.start();
        assert!(l.may_send(now));
        l.finish(Signal::Throttled(Some(Duration::from_secs(2))), now);
        assert!(!l.may_send(now + Duration::from_millis(1999)));
        assert_eq!(l.paused_until(now), Some(now + Duration::from_secs(2)));
        assert!(l.may_send(now + Duration::from_secs(2)));
        // A shorter later pause does not cut a longer one short.
        l.finish(
            Signal::Throttled(Some(Duration::from_millis(100))),
            now + Duration::from_millis(10),
        );
        assert_eq!(l.paused_until(now), Some(now + Duration::from_secs(2)));
    }

    #[test]
    fn throttles_without_a_time_pause_longer_in_a_row_until_a_success() {
        let t0 = Instant::now();
        let mut l = Limiter::new(8, Duration::from_secs(1), Duration::from_secs(1));
        let mut now = t0;
        let mut pauses = Vec::new();
        for _ in 0..4 {
            l.start();
            l.finish(Signal::Throttled(None), now);
            let until = l.paused_until(now).unwrap();
            pauses.push(until - now);
            now = until;
        }
        let ms = |n| Duration::from_millis(n);
        assert_eq!(pauses, vec![ms(250), ms(500), ms(1000), ms(1000)], "doubling, capped");
        // Answers of requests sent before the pause, throttled too: the same throttle.
        l.start();
        l.finish(Signal::Throttled(None), now - ms(1));
        assert_eq!(l.paused_until(now - ms(1)), Some(now), "not lengthened");
        l.start();
        l.finish(Signal::Ok, now);
        l.start();
        l.finish(Signal::Throttled(None), now);
        assert_eq!(l.paused_until(now), Some(now + ms(250)), "a success starts over");
    }

    #[test]
    fn in_flight_is_capped_by_the_limit() {
        let now = Instant::now();
        let mut l = Limiter::new(2, Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(l.limit(), 1);
        l.start();
        assert!(!l.may_send(now));
        l.finish(Signal::Ok, now);
        assert!(l.may_send(now));
    }
}
