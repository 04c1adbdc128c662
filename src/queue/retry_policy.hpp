// When to try a deferred message again, and when to give up on it.
//
// The schedule is Postfix's: the first retry waits `initial`
// (minimal_backoff_time), each further one doubles the wait up to
// `max_interval` (maximal_backoff_time), and a message older than
// `max_lifetime` (maximal_queue_lifetime) is returned to its sender.  With
// the defaults a message is retried after 5, 10, 20, 40, 60, 60, ... minutes
// and bounced after 5 days.
//
// Pure arithmetic on Unix seconds: no clock is read here, the caller passes
// `now`, so the schedule is deterministic in tests.
#pragma once

#include <chrono>
#include <cstdint>

namespace mxgate::queue {

struct RetryPolicy {
  std::chrono::seconds initial{300};          // wait after the first failure; <= 0 counts as 1 s
  std::chrono::seconds max_interval{3600};    // cap on the doubled wait; below `initial`, the cap wins
  std::chrono::seconds max_lifetime{432000};  // 5 days; 0 = give up after the first failure (as Postfix)
};

// The Unix time of the next attempt after `attempts_so_far` failed
// attempts: now + min(initial * 2^(attempts_so_far - 1), max_interval).
// attempts_so_far == 0 (never tried) means "now".  Saturates instead of
// overflowing for any attempts count and any `now`.
std::int64_t next_attempt(const RetryPolicy& policy, unsigned attempts_so_far, std::int64_t now);

// True once the message has been queued for max_lifetime or longer:
// now - first_attempt_or_arrival >= max_lifetime.  Pass the arrival time
// (Envelope::received_unix), as Postfix does, so that a message that waited
// before its first attempt is not kept longer.  A clock that went backwards
// (now before the start) never expires a message.
bool expired(const RetryPolicy& policy, std::int64_t first_attempt_or_arrival, std::int64_t now);

}  // namespace mxgate::queue
