// The delivery runner's thread and queue.  Order of effects per message:
// load, write the Maildir copy durably, log, then remove from the spool.  A
// crash between the last two delivers the message twice, never zero times.
#include "delivery/delivery_runner.hpp"

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "util/log.hpp"

namespace mxgate::delivery {

DeliveryRunner::DeliveryRunner(queue::Spool spool, Maildir maildir, std::chrono::milliseconds retry_delay)
    : spool_(std::move(spool)), maildir_(std::move(maildir)), retry_delay_(retry_delay) {}

DeliveryRunner::~DeliveryRunner() { stop(); }

void DeliveryRunner::start() {
  std::vector<std::string> spooled = spool_.list();
  std::lock_guard lock(mutex_);
  if (started_ || stopping_) return;
  started_ = true;
  for (auto& id : spooled) add_pending(std::move(id));
  thread_ = std::thread([this] { run(); });
}

void DeliveryRunner::enqueue(std::string id) {
  {
    std::lock_guard lock(mutex_);
    add_pending(std::move(id));
  }
  wake_.notify_one();
}

void DeliveryRunner::stop() {
  std::thread thread;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    thread = std::move(thread_);  // so concurrent stop() calls join only once
  }
  wake_.notify_all();
  if (thread.joinable()) thread.join();
}

std::size_t DeliveryRunner::delivered() const {
  std::lock_guard lock(mutex_);
  return delivered_;
}

void DeliveryRunner::add_pending(std::string id) {
  const bool queued =
      std::find(pending_.begin(), pending_.end(), id) != pending_.end() ||
      std::any_of(deferred_.begin(), deferred_.end(), [&](const auto& entry) { return entry.second == id; });
  if (!queued) pending_.push_back(std::move(id));
}

void DeliveryRunner::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    // Deferred messages whose retry time has come go back to the queue.
    const auto now = Clock::now();
    auto due = std::stable_partition(deferred_.begin(), deferred_.end(),
                                     [&](const auto& entry) { return entry.first > now; });
    for (auto it = due; it != deferred_.end(); ++it) pending_.push_back(std::move(it->second));
    deferred_.erase(due, deferred_.end());

    if (stopping_) return;
    if (pending_.empty()) {
      if (deferred_.empty()) {
        wake_.wait(lock);
      } else {
        const auto next = std::min_element(deferred_.begin(), deferred_.end())->first;
        wake_.wait_until(lock, next);
      }
      continue;
    }

    std::string id = std::move(pending_.front());
    pending_.pop_front();
    lock.unlock();
    const Outcome outcome = process(id);
    lock.lock();
    if (outcome == Outcome::delivered) {
      ++delivered_;
    } else if (outcome == Outcome::deferred) {
      deferred_.emplace_back(Clock::now() + retry_delay_, std::move(id));
    }
  }
}

DeliveryRunner::Outcome DeliveryRunner::process(const std::string& id) {
  const std::string prefix = "delivery: " + id + ": ";
  auto bytes = spool_.read(id);
  if (!bytes) {
    // Gone means someone else finished it (a duplicate enqueue); anything
    // else is an I/O problem that may pass.
    std::error_code ec;
    if (!std::filesystem::exists(spool_.directory() / "queue" / id, ec) && !ec) {
      log_line(prefix + "no longer in the spool");
      return Outcome::dropped;
    }
    log_line(prefix + "deferred: " + bytes.error());
    return Outcome::deferred;
  }

  auto message = queue::Spool::decode(*bytes, id);
  if (!message) {
    // Retrying cannot repair a damaged file; keep it aside for a human.
    auto moved = spool_.quarantine(id);
    log_line(prefix + message.error() +
             (moved ? "; moved to " + (spool_.directory() / "corrupt").string()
                    : "; cannot move it aside: " + moved.error()));
    return Outcome::dropped;
  }

  auto name = maildir_.deliver(*message);
  if (!name) {
    log_line(prefix + "deferred: " + name.error());
    return Outcome::deferred;
  }
  log_line(prefix + "delivered to maildir as " + *name);

  if (auto removed = spool_.remove(id); !removed) {
    // Not retried: that would deliver it again now.  It stays spooled and
    // is delivered a second time at the next start (at least once).
    log_line(prefix + "delivered but not removed from the spool: " + removed.error());
  }
  return Outcome::delivered;
}

}  // namespace mxgate::delivery
