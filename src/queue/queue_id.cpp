// Queue IDs: 11 base-32 digits of microseconds since the epoch (enough until
// the year 3100) followed by 5 base-32 digits of a process-wide counter.  The
// fixed width and an alphabet in ASCII order (0-9 then A-V) make string order
// equal arrival order.  The counter starts at a random value so that two
// processes started in the same microsecond (a restart, or a second instance
// on the same spool) do not produce the same sequence; within one process
// two IDs could only collide after 2^25 IDs in a single microsecond.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <random>
#include <string>

#include "queue/spool.hpp"

namespace mxgate::queue {
namespace {

constexpr char kDigits[] = "0123456789ABCDEFGHIJKLMNOPQRSTUV";
constexpr int kTimeDigits = 11;
constexpr int kCounterDigits = 5;

void append_base32(std::string& out, std::uint64_t value, int width) {
  for (int i = width - 1; i >= 0; --i) {
    out.push_back(kDigits[(value >> (5 * i)) & 31]);
  }
}

std::uint32_t random_start() {
  std::random_device device;
  return device();
}

}  // namespace

std::string new_queue_id() {
  // The one piece of process-wide mutable state the ID scheme needs;
  // initialised on first use (thread-safe static initialisation).
  static std::atomic<std::uint32_t> counter{random_start()};

  const auto now = std::chrono::system_clock::now().time_since_epoch();
  const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(now).count();
  const std::uint32_t sequence = counter.fetch_add(1, std::memory_order_relaxed);

  std::string id;
  id.reserve(kTimeDigits + kCounterDigits);
  append_base32(id, static_cast<std::uint64_t>(micros), kTimeDigits);
  append_base32(id, sequence, kCounterDigits);
  return id;
}

}  // namespace mxgate::queue
