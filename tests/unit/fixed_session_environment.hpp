// A deterministic SessionEnvironment for the protocol-core tests: a fixed
// clock and queue IDs Q0000001, Q0000002, ...
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

#include "smtp/session.hpp"

namespace mxgate::smtp::test_support {

inline constexpr std::int64_t kFixedNowUnix = 1709211909;  // Thu, 29 Feb 2024 13:05:09 +0000

class FixedEnvironment : public SessionEnvironment {
 public:
  std::chrono::system_clock::time_point now() override {
    return std::chrono::system_clock::time_point{std::chrono::seconds{kFixedNowUnix}};
  }
  std::string new_queue_id() override {
    char buf[16];
    std::snprintf(buf, sizeof buf, "Q%07u", ++issued_);
    return buf;
  }

 private:
  unsigned issued_ = 0;
};

}  // namespace mxgate::smtp::test_support
