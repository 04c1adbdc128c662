// The retry schedule (Postfix's backoff) and queue lifetime, at and one
// past every limit.
#include "queue/retry_policy.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>

namespace mxgate::queue {
namespace {

using std::chrono::seconds;
constexpr std::int64_t kNow = 1'739'440'800;  // 2025-02-13 10:00:00 UTC
constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t kMin = std::numeric_limits<std::int64_t>::min();

TEST(RetryPolicy, DefaultsAreFiveMinutesOneHourFiveDays) {
  const RetryPolicy p;
  EXPECT_EQ(p.initial, seconds(300));
  EXPECT_EQ(p.max_interval, seconds(3600));
  EXPECT_EQ(p.max_lifetime, seconds(5 * 24 * 3600));
}

TEST(RetryPolicy, NeverTriedMeansNow) { EXPECT_EQ(next_attempt(RetryPolicy{}, 0, kNow), kNow); }

TEST(RetryPolicy, DoublesFromInitialUpToTheCap) {
  const RetryPolicy p;
  EXPECT_EQ(next_attempt(p, 1, kNow) - kNow, 300);
  EXPECT_EQ(next_attempt(p, 2, kNow) - kNow, 600);
  EXPECT_EQ(next_attempt(p, 3, kNow) - kNow, 1200);
  EXPECT_EQ(next_attempt(p, 4, kNow) - kNow, 2400);
  EXPECT_EQ(next_attempt(p, 5, kNow) - kNow, 3600);  // 4800 capped
  EXPECT_EQ(next_attempt(p, 6, kNow) - kNow, 3600);
  EXPECT_EQ(next_attempt(p, 100, kNow) - kNow, 3600);
}

TEST(RetryPolicy, HugeAttemptCountsStayAtTheCap) {
  const RetryPolicy p;
  EXPECT_EQ(next_attempt(p, 64, kNow) - kNow, 3600);
  EXPECT_EQ(next_attempt(p, 65, kNow) - kNow, 3600);
  EXPECT_EQ(next_attempt(p, std::numeric_limits<unsigned>::max(), kNow) - kNow, 3600);
}

TEST(RetryPolicy, ReachesTheCapExactlyWhenItIsAPowerOfTwoMultiple) {
  const RetryPolicy p{seconds(60), seconds(240), seconds(1000)};
  EXPECT_EQ(next_attempt(p, 1, kNow) - kNow, 60);
  EXPECT_EQ(next_attempt(p, 2, kNow) - kNow, 120);
  EXPECT_EQ(next_attempt(p, 3, kNow) - kNow, 240);
  EXPECT_EQ(next_attempt(p, 4, kNow) - kNow, 240);
}

TEST(RetryPolicy, InitialAboveTheCapIsCapped) {
  const RetryPolicy p{seconds(7200), seconds(3600), seconds(432000)};
  EXPECT_EQ(next_attempt(p, 1, kNow) - kNow, 3600);
  EXPECT_EQ(next_attempt(p, 2, kNow) - kNow, 3600);
}

TEST(RetryPolicy, NonPositiveIntervalsCountAsOneSecond) {
  const RetryPolicy zero{seconds(0), seconds(0), seconds(0)};
  EXPECT_EQ(next_attempt(zero, 1, kNow) - kNow, 1);
  EXPECT_EQ(next_attempt(zero, 30, kNow) - kNow, 1);
  const RetryPolicy negative{seconds(-5), seconds(-5), seconds(-5)};
  EXPECT_EQ(next_attempt(negative, 3, kNow) - kNow, 1);
}

TEST(RetryPolicy, HugeIntervalsDoNotOverflow) {
  const RetryPolicy p{seconds(kMax / 2 + 1), seconds(kMax), seconds(kMax)};
  EXPECT_EQ(next_attempt(p, 1, 0), kMax / 2 + 1);
  EXPECT_EQ(next_attempt(p, 2, 0), kMax);  // doubling would pass kMax: capped
  EXPECT_EQ(next_attempt(p, 3, 0), kMax);
}

TEST(RetryPolicy, NextAttemptSaturatesAtTheEndOfTime) {
  const RetryPolicy p;
  EXPECT_EQ(next_attempt(p, 1, kMax - 299), kMax);
  EXPECT_EQ(next_attempt(p, 1, kMax - 300), kMax);
  EXPECT_EQ(next_attempt(p, 1, kMax - 301), kMax - 1);
  EXPECT_EQ(next_attempt(p, 5, kMax), kMax);
  EXPECT_EQ(next_attempt(p, 1, kMin), kMin + 300);
}

TEST(RetryPolicy, ExpiresAtExactlyMaxLifetime) {
  const RetryPolicy p;
  const std::int64_t arrival = kNow;
  EXPECT_FALSE(expired(p, arrival, arrival));
  EXPECT_FALSE(expired(p, arrival, arrival + 432000 - 1));
  EXPECT_TRUE(expired(p, arrival, arrival + 432000));
  EXPECT_TRUE(expired(p, arrival, arrival + 432000 + 1));
}

TEST(RetryPolicy, ZeroLifetimeGivesUpAfterTheFirstFailure) {
  const RetryPolicy p{seconds(300), seconds(3600), seconds(0)};
  EXPECT_TRUE(expired(p, kNow, kNow));
}

TEST(RetryPolicy, ClockGoingBackwardsNeverExpires) {
  const RetryPolicy p{seconds(300), seconds(3600), seconds(0)};
  EXPECT_FALSE(expired(p, kNow, kNow - 1));
  EXPECT_FALSE(expired(RetryPolicy{}, kMax, kMin));
}

TEST(RetryPolicy, ExpiryArithmeticDoesNotOverflow) {
  const RetryPolicy p;
  EXPECT_TRUE(expired(p, kMin, kMax));
  EXPECT_TRUE(expired(p, -1, kMax));
  EXPECT_TRUE(expired(p, kMin, 0));
  EXPECT_FALSE(expired(p, kMax, kMax));
  const RetryPolicy forever{seconds(300), seconds(3600), seconds(kMax)};
  EXPECT_FALSE(expired(forever, 0, kMax - 1));
  EXPECT_TRUE(expired(forever, 0, kMax));
}

}  // namespace
}  // namespace mxgate::queue
