// See retry_policy.hpp.  All arithmetic saturates at the int64 range: a
// policy read from a configuration file, a huge attempts count or a bogus
// clock must not produce signed overflow (undefined behaviour).
#include "queue/retry_policy.hpp"

#include <algorithm>
#include <limits>

namespace mxgate::queue {
namespace {

constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t kMin = std::numeric_limits<std::int64_t>::min();

std::int64_t saturating_add(std::int64_t a, std::int64_t b) {
  if (b > 0 && a > kMax - b) return kMax;
  if (b < 0 && a < kMin - b) return kMin;
  return a + b;
}

}  // namespace

std::int64_t next_attempt(const RetryPolicy& policy, unsigned attempts_so_far, std::int64_t now) {
  if (attempts_so_far == 0) return now;
  const std::int64_t initial = std::max<std::int64_t>(policy.initial.count(), 1);
  const std::int64_t cap = std::max<std::int64_t>(policy.max_interval.count(), 1);
  std::int64_t delay = std::min(initial, cap);
  // Double (attempts_so_far - 1) times, stopping at the cap; at most 63
  // doublings can happen before any positive value reaches it.
  for (unsigned i = 1; i < attempts_so_far && delay < cap; ++i) {
    delay = delay > cap / 2 ? cap : delay * 2;
  }
  return saturating_add(now, delay);
}

bool expired(const RetryPolicy& policy, std::int64_t first_attempt_or_arrival, std::int64_t now) {
  if (now < first_attempt_or_arrival) return false;
  const std::int64_t lifetime = std::max<std::int64_t>(policy.max_lifetime.count(), 0);
  // now - start cannot overflow when start is non-negative; otherwise saturate.
  const std::int64_t age = first_attempt_or_arrival >= 0 || now <= kMax + first_attempt_or_arrival
                               ? now - first_attempt_or_arrival
                               : kMax;
  return age >= lifetime;
}

}  // namespace mxgate::queue
