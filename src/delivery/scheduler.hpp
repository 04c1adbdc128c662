// The delivery scheduler: one thread with its own event loop that takes
// every spooled message to its destinations (RFC 5321 sections 4.5.4 and
// 6.1): the local Maildir, a configured relay, or the recipient domain's MX
// hosts with the TLS level each destination deserves.  Per recipient it
// records delivered / failed / pending in the message's delivery state;
// temporary failures are retried on the RetryPolicy schedule until the
// message's lifetime ends; permanent failures bounce at once with an RFC
// 3464 DSN to the sender (never to the null sender).  A message leaves the
// spool only when every recipient has a final result.
#pragma once

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/thread_pool.hpp>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <type_traits>

#include "config/config.hpp"
#include "delivery/async_limiter.hpp"
#include "delivery/maildir.hpp"
#include "delivery/smtp_client.hpp"
#include "dns/resolver.hpp"
#include "queue/delivery_state.hpp"
#include "queue/retry_policy.hpp"
#include "queue/spool.hpp"
#include "util/result.hpp"

namespace mxgate::delivery {

class Scheduler {
 public:
  // Validates what delivery needs (Maildir, DNS trust anchors) before start.
  static Result<std::unique_ptr<Scheduler>> create(const config::Config& config, queue::Spool spool);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Starts the thread; every message already in the spool is scheduled.
  void start();
  // Thread-safe: a message was just spooled.
  void enqueue(std::string id);
  // Thread-safe: every deferred message is tried now (mxgate queue flush).
  void flush();
  // Stops at once; undelivered messages stay spooled with their state.
  void stop();

 private:
  Scheduler(const config::Config& config, queue::Spool spool);

  struct Group;
  struct Attempt;
  asio::awaitable<void> run_message(std::string id);
  asio::awaitable<bool> attempt(const std::string& id);
  asio::awaitable<void> deliver_to_maildir(Attempt& attempt, const Group& group);
  asio::awaitable<void> deliver_over_network(Attempt& attempt, const Group& group);
  asio::awaitable<bool> finish(Attempt& attempt);
  // Reads the content of a message loaded without it (into a kept buffer).
  // False, with error set, when the spool file cannot be read.
  bool load_content(Attempt& attempt, std::string& error);
  // Runs work (a file operation that may wait for the device) on
  // disk_pool_ and resumes on the delivery thread with its result.
  template <class Work>
  asio::awaitable<std::invoke_result_t<Work&>> on_disk(Work work);

  const config::Config& config_;
  queue::Spool spool_;
  std::optional<Maildir> maildir_;
  queue::RetryPolicy retry_;
  ClientSettings client_;
  std::unique_ptr<asio::io_context> io_;
  std::unique_ptr<dns::Resolver> resolver_;
  // Idle outbound connections for reuse; used only on the delivery thread
  // (closed in stop() after the thread has ended).
  std::unique_ptr<ConnectionCache> connections_;
  std::mt19937 rng_;
  std::set<std::string> active_;                     // messages with a running coroutine
  std::map<std::string, asio::steady_timer*> sleeping_;  // waiting for their next attempt
  AsyncLimiter parallel_;                               // delivery.max_parallel
  std::map<std::string, AsyncLimiter> destinations_;   // delivery.destination_concurrency each
  bool stopping_ = false;
  std::thread thread_;
  // Maildir deliveries, state saves, bounce stores and removals: each may
  // wait for the device, which must not stall every other delivery on the
  // loop (see scheduler.cpp).
  // Joined in ~Scheduler before the io_context (and with it the coroutine
  // frames whose messages its work reads) is destroyed.
  asio::thread_pool disk_pool_;
  // Spool files are read into buffers kept from earlier attempts (bounded,
  // see scheduler.cpp): a fresh buffer per delivery cost more in page
  // faults than reading a large message.
  std::vector<std::string> read_buffers_;
  std::size_t kept_read_bytes_ = 0;  // capacity of read_buffers_
};

}  // namespace mxgate::delivery
