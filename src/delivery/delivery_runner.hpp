// The delivery runner: one thread that moves spooled messages into the
// Maildir and removes them from the spool only after the Maildir copy is
// durable, so every acknowledged message is delivered at least once, even
// across kill -9.  At start it delivers whatever the spool still holds.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "delivery/maildir.hpp"
#include "queue/spool.hpp"

namespace mxgate::delivery {

class DeliveryRunner {
 public:
  // A message whose delivery fails (Maildir unwritable, disk full) is
  // retried after retry_delay; tests pass a short one.
  DeliveryRunner(queue::Spool spool, Maildir maildir,
                 std::chrono::milliseconds retry_delay = std::chrono::seconds(30));
  ~DeliveryRunner();  // stop()
  DeliveryRunner(const DeliveryRunner&) = delete;
  DeliveryRunner& operator=(const DeliveryRunner&) = delete;

  // Queues every ID already in the spool, then starts the thread.  Only the
  // first call has an effect; a stopped runner is not restarted.
  void start();
  // Called after a message was stored.  Thread-safe.
  void enqueue(std::string id);
  // Finishes the message in hand, then stops; undelivered messages stay spooled.
  void stop();

  // Number of messages delivered since start (for tests and the session log).
  std::size_t delivered() const;

 private:
  enum class Outcome { delivered, deferred, dropped };
  using Clock = std::chrono::steady_clock;

  void run();
  // Delivers one message; runs on the runner thread without the mutex.
  Outcome process(const std::string& id);
  // Appends id to pending_ unless it is already there.  Mutex held.
  void add_pending(std::string id);

  queue::Spool spool_;
  Maildir maildir_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::string> pending_;
  std::vector<std::pair<Clock::time_point, std::string>> deferred_;  // retry time, ID
  std::chrono::milliseconds retry_delay_;
  bool started_ = false;
  bool stopping_ = false;
  std::size_t delivered_ = 0;
  std::thread thread_;
};

}  // namespace mxgate::delivery
