#include "delivery/scheduler.hpp"

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/post.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <algorithm>
#include <chrono>
#include <ctime>
#include <utility>

#include "delivery/bounce.hpp"
#include "delivery/destination.hpp"
#include "dns/resolver_options.hpp"
#include "util/log.hpp"

// Disk work.  Whatever may wait for the device - a Maildir delivery (two
// fsyncs), a state save after an attempt that left recipients pending (two),
// a bounce spooled (two), the removal of a delivered message (two unlinks,
// deliberately without fsync, see queue/delivery_state.hpp: a lost removal
// is a redelivery, never a loss; but an unlink frees blocks, which on ext4
// with `discard` and no journal waits for a discard) - runs on disk_pool_
// (queue.sync_threads threads), so it no longer holds up every other
// delivery on this loop and several waits overlap.  Reading the spool and
// state files stays inline: the page cache has them.  On the success path
// nothing is written at all.

namespace mxgate::delivery {
namespace {

// Connection reuse (Postfix scache): an idle connection is kept this long,
// at most delivery.destination_concurrency per destination address and TLS
// requirement.  Fewer (4 once) closed most connections of a burst and paid a
// full TLS handshake for each again: 17 % of mxgate's CPU in bench/run
// scenario b.  More cannot be in use at once, and idle ones expire.
constexpr std::chrono::seconds kConnectionMaxIdle{5};
// Spool read buffers kept for reuse: at most 32 MiB stay allocated, in
// buffers of at most 4 MiB (larger messages are rare enough to pay for theirs).
// Only buffers of contents read by load_content() are kept: a small content
// comes with the first read of its file into a buffer of its own size, which
// malloc recycles by itself; keeping those would pile up thousands of small
// buffers that no load ever takes, and each message would touch fresh pages.
constexpr std::size_t kKeptReadBytes = 32 * 1024 * 1024;
constexpr std::size_t kMinKeptReadBuffer = 16 * 1024;
constexpr std::size_t kMaxKeptReadBuffer = 4 * 1024 * 1024;

std::int64_t unix_now() { return static_cast<std::int64_t>(std::time(nullptr)); }

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

std::string domain_of(const std::string& mailbox) {
  const auto at = mailbox.rfind('@');
  return at == std::string::npos ? std::string() : lower(std::string_view(mailbox).substr(at + 1));
}

int reply_code(std::string_view reply) {
  if (reply.size() < 3) return 0;
  int code = 0;
  for (int i = 0; i < 3; ++i) {
    if (reply[i] < '0' || reply[i] > '9') return 0;
    code = code * 10 + (reply[i] - '0');
  }
  return code;
}

}  // namespace

struct Scheduler::Group {
  enum class Kind { maildir, network } kind = Kind::network;
  const config::Route* route = nullptr;  // null: MX delivery
  std::string domain;                    // the recipients' domain
  std::vector<std::size_t> recipients;   // indexes into the delivery state
};

struct Scheduler::Attempt {
  queue::SpooledMessage message;
  queue::DeliveryState state;
  std::vector<std::size_t> failed_now;            // recipients that failed in this attempt: bounce them
  std::map<std::size_t, std::string> remote_mta;  // who refused them
};

Result<std::unique_ptr<Scheduler>> Scheduler::create(const config::Config& config, queue::Spool spool) {
  std::unique_ptr<Scheduler> scheduler(new Scheduler(config, std::move(spool)));
  if (!config.delivery.maildir.empty()) {
    auto maildir = Maildir::open(config.delivery.maildir);
    if (!maildir) return make_error("delivery.maildir: " + maildir.error());
    scheduler->maildir_.emplace(std::move(maildir.value()));
  }
  const dns::ResolverOptions options = dns::resolver_options(config);
  auto resolver = dns::Resolver::create(*scheduler->io_, options);
  if (!resolver) return make_error("dns: " + resolver.error());
  scheduler->resolver_ = std::move(resolver.value());
  return scheduler;
}

Scheduler::Scheduler(const config::Config& config, queue::Spool spool)
    : config_(config),
      spool_(std::move(spool)),
      io_(std::make_unique<asio::io_context>(1)),
      rng_(std::random_device{}()),
      parallel_(config.delivery.max_parallel),
      disk_pool_(config.queue.sync_threads) {
  retry_.initial = config.queue.retry_initial;
  retry_.max_interval = config.queue.retry_max;
  retry_.max_lifetime = config.queue.max_lifetime;
  client_.helo_name = config.hostname;
  connections_ = std::make_unique<ConnectionCache>(io_->get_executor(), kConnectionMaxIdle,
                                                    config.delivery.destination_concurrency);
}

Scheduler::~Scheduler() {
  stop();
  disk_pool_.join();  // its work reads messages held by coroutine frames of io_
  connections_.reset();  // its sockets belong to the io_context
  // The resolver's descriptor belongs to the io_context too, so it goes
  // first; it fails whatever lookups are pending instead of touching them.
  // Coroutine frames still suspended are destroyed with the io_context.
  resolver_.reset();
  io_.reset();
}

void Scheduler::start() {
  if (thread_.joinable()) return;
  if (auto pruned = queue::prune_states(spool_.directory()); !pruned)
    log_line("delivery: cannot prune delivery states: " + pruned.error());
  // A restart is often the operator's fix for whatever deferred the mail,
  // so everything spooled is tried once now, whatever its retry time.
  for (auto& id : spool_.list()) enqueue(std::move(id));
  thread_ = std::thread([this] {
    auto guard = asio::make_work_guard(*io_);
    io_->run();
  });
}

void Scheduler::enqueue(std::string id) {
  asio::post(*io_, [this, id = std::move(id)]() mutable {
    if (stopping_ || !active_.insert(id).second) return;
    asio::co_spawn(*io_, run_message(std::move(id)), asio::detached);
  });
}

void Scheduler::flush() {
  asio::post(*io_, [this] {
    for (auto& [id, timer] : sleeping_) timer->cancel();
    for (auto& id : spool_.list()) {
      if (active_.insert(id).second) asio::co_spawn(*io_, run_message(id), asio::detached);
    }
  });
}

void Scheduler::stop() {
  if (!thread_.joinable()) return;
  asio::post(*io_, [this] { stopping_ = true; });
  io_->stop();
  thread_.join();
  connections_->close_all();
}

asio::awaitable<void> Scheduler::run_message(std::string id) {
  asio::steady_timer timer(*io_);
  bool first = true;  // enqueued: new, flushed, or found at start; due now
  for (;;) {
    std::int64_t due = 0;
    if (!first) {
      if (auto state = queue::read_state(spool_.directory(), id); state && state.value())
        due = state.value()->next_attempt_unix;
    }
    first = false;
    const std::int64_t wait = due - unix_now();
    if (wait > 0) {
      timer.expires_after(std::chrono::seconds(wait));
      sleeping_[id] = &timer;
      asio::error_code ec;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      sleeping_.erase(id);
      if (stopping_) break;
    }
    co_await parallel_.acquire();
    const bool finished = co_await attempt(id);
    parallel_.release();
    if (finished || stopping_) break;
  }
  active_.erase(id);
}

bool Scheduler::load_content(Attempt& attempt, std::string& error) {
  if (!attempt.message.content_pending) return true;
  std::string buffer;
  if (!read_buffers_.empty()) {
    buffer = std::move(read_buffers_.back());
    read_buffers_.pop_back();
    kept_read_bytes_ -= buffer.capacity();
  }
  queue::Spool::LoadFailure failure;
  auto loaded = spool_.load(attempt.state.id, std::move(buffer), failure);
  if (!loaded) {
    error = loaded.error();
    log_line("delivery: " + attempt.state.id + ": " + error);
    return false;
  }
  attempt.message.content = std::move(loaded->content);
  attempt.message.content_pending = false;
  return true;
}

asio::awaitable<bool> Scheduler::attempt(const std::string& id) {
  // The envelope now; a large content only when it is about to be sent
  // (load_content): up to max_parallel messages are in an attempt at once,
  // most of them waiting for a connection to their destination.
  queue::Spool::LoadFailure failure;
  auto loaded = spool_.load(id, {}, failure, queue::Spool::ContentRead::if_small);
  if (!loaded && failure == queue::Spool::LoadFailure::io) {
    // Deleted by "mxgate queue delete", or unreadable: nothing to deliver.
    log_line("delivery: " + id + ": skipped: " + loaded.error());
    co_return true;
  }
  if (!loaded) {
    // Never delivered, never retried in a loop: set aside for the operator.
    const auto moved = spool_.quarantine(id);
    log_line("delivery: " + id + ": " + loaded.error() +
             (moved ? "; moved to " + (spool_.directory() / "corrupt").string() : "; " + moved.error()));
    co_return true;
  }
  Attempt attempt{std::move(loaded.value()), {}, {}, {}};
  auto state = queue::load_state(spool_.directory(), attempt.message.envelope);
  if (!state) {
    log_line("delivery: " + id + ": state unreadable, starting over: " + state.error());
    attempt.state = queue::fresh_state(attempt.message.envelope);
  } else {
    attempt.state = std::move(state.value());
  }
  if (attempt.state.first_attempt_unix == 0) attempt.state.first_attempt_unix = unix_now();

  // Group pending recipients by where they go; first matching route wins.
  std::vector<Group> groups;
  for (std::size_t i = 0; i < attempt.state.recipients.size(); ++i) {
    const auto& rcpt = attempt.state.recipients[i];
    if (rcpt.status != queue::RecipientState::Status::pending) continue;
    Group group;
    group.domain = domain_of(rcpt.recipient);
    group.route = config::find_route(config_, group.domain);
    // Mail with no route goes to the Maildir when there is one, as does
    // "<Postmaster>" without a domain.
    const bool to_maildir = group.route ? group.route->kind == config::Route::Kind::maildir
                                        : (maildir_.has_value() || group.domain.empty());
    group.kind = to_maildir ? Group::Kind::maildir : Group::Kind::network;
    auto same = std::find_if(groups.begin(), groups.end(), [&](const Group& g) {
      return g.kind == group.kind && g.route == group.route &&
             (group.kind == Group::Kind::maildir || group.route != nullptr || g.domain == group.domain);
    });
    if (same == groups.end()) {
      group.recipients.push_back(i);
      groups.push_back(std::move(group));
    } else {
      same->recipients.push_back(i);
    }
  }
  for (const Group& group : groups) {
    if (group.kind == Group::Kind::maildir) {
      co_await deliver_to_maildir(attempt, group);
    } else {
      co_await deliver_over_network(attempt, group);
    }
  }
  const bool finished = co_await finish(attempt);
  if (std::string& kept = attempt.message.content;
      kept.capacity() >= kMinKeptReadBuffer && kept.capacity() <= kMaxKeptReadBuffer &&
      kept_read_bytes_ + kept.capacity() <= kKeptReadBytes) {
    // Not cleared: Spool::load() overwrites it, and a buffer that keeps its
    // size is not zero-filled again when it is resized for the next message.
    kept_read_bytes_ += kept.capacity();
    read_buffers_.push_back(std::move(kept));
  }
  co_return finished;
}

template <class Work>
asio::awaitable<std::invoke_result_t<Work&>> Scheduler::on_disk(Work work) {
  using R = std::invoke_result_t<Work&>;
  // co_spawn needs a default-constructible result; Result<T> is not.
  auto result = co_await asio::co_spawn(
      disk_pool_.get_executor(), [&work]() -> asio::awaitable<std::optional<R>> { co_return work(); },
      asio::use_awaitable);
  co_return std::move(*result);
}

asio::awaitable<void> Scheduler::deliver_to_maildir(Attempt& attempt, const Group& group) {
  auto& state = attempt.state;
  if (!maildir_) {
    for (const std::size_t i : group.recipients) {
      state.recipients[i].last_reply = "451 4.3.5 no Maildir configured for local delivery";
    }
    co_return;
  }
  if (std::string error; !load_content(attempt, error)) {
    for (const std::size_t i : group.recipients) state.recipients[i].last_reply = "451 4.3.0 " + error;
    co_return;
  }
  queue::SpooledMessage copy{attempt.message.envelope, {}};
  copy.envelope.recipients.clear();
  for (const std::size_t i : group.recipients) copy.envelope.recipients.push_back(state.recipients[i].recipient);
  // The content is shared by reference semantics of deliver(): avoid a copy
  // when every recipient goes here (the common case).
  const bool all = copy.envelope.recipients.size() == attempt.message.envelope.recipients.size();
  if (!all) copy.content = attempt.message.content;
  const queue::SpooledMessage& message = all ? attempt.message : copy;
  const auto result = co_await on_disk([&] { return maildir_->deliver(message); });
  for (const std::size_t i : group.recipients) {
    auto& rcpt = state.recipients[i];
    if (result) {
      rcpt.status = queue::RecipientState::Status::delivered;
      rcpt.last_reply = "250 2.0.0 delivered to maildir as " + result.value();
    } else {
      rcpt.last_reply = "451 4.3.0 maildir: " + result.error();
    }
  }
  log_line("delivery: " + state.id + ": to=maildir nrcpt=" + std::to_string(group.recipients.size()) +
           (result ? " status=sent (" + result.value() + ")" : " status=deferred (" + result.error() + ")"));
}

asio::awaitable<void> Scheduler::deliver_over_network(Attempt& attempt, const Group& group) {
  auto& state = attempt.state;
  const std::string level_name =
      group.route != nullptr && !group.route->tls.empty() ? group.route->tls : config_.delivery.tls;
  TlsLevel level = TlsLevel::may;
  parse_tls_level(level_name, level);
  const std::string where = group.route != nullptr && group.route->kind == config::Route::Kind::smtp
                                ? group.route->next_hop
                                : group.domain;
  std::vector<std::size_t> remaining = group.recipients;

  std::set<std::size_t> answered;  // got a reply from some server in this attempt

  Destination destination =
      co_await resolve_destination(*resolver_, group.route, group.domain, config_.delivery.mx_port, rng_);
  if (destination.outcome != Destination::Outcome::ok) {
    const bool bounce = destination.outcome == Destination::Outcome::bounce;
    const std::string reply = (bounce ? "550 " : "451 ") + destination.reason;
    for (const std::size_t i : remaining) {
      state.recipients[i].last_reply = reply;
      if (bounce) {
        state.recipients[i].status = queue::RecipientState::Status::failed;
        attempt.failed_now.push_back(i);
      }
    }
    log_line("delivery: " + state.id + ": to=" + where + " tls=" + level_name +
             (bounce ? " status=bounced (" : " status=deferred (") + destination.reason + ")");
    co_return;
  }

  // At most destination_concurrency connections to one destination at once.
  auto& limiter = destinations_.try_emplace(where, config_.delivery.destination_concurrency).first->second;
  co_await limiter.acquire();
  std::string last_error = "no MX host could be reached";
  if (std::string error; !load_content(attempt, error)) {
    remaining.clear();  // none of them is tried
    for (const std::size_t i : group.recipients) state.recipients[i].last_reply = "451 4.3.0 " + error;
  }
  for (const Candidate& candidate : destination.candidates) {
    if (remaining.empty()) break;
    if (candidate.addresses.empty()) {
      last_error = candidate.error;
      log_line("delivery: " + state.id + ": to=" + where + " relay=" + candidate.host + " tls=" + level_name +
               " status=deferred (" + candidate.error + ")");
      continue;
    }
    std::optional<dns::Answer<dns::TlsaRecord>> tlsa;
    if ((level == TlsLevel::dane || level == TlsLevel::dane_only) && candidate.security == dns::Security::secure) {
      tlsa = co_await resolver_->tlsa(candidate.port, candidate.host);
    }
    const TlsDecision decision = decide_tls(level, candidate.security, candidate.host, tlsa ? &*tlsa : nullptr);
    if (decision.defer) {
      last_error = decision.reason + " for " + candidate.host;
      log_line("delivery: " + state.id + ": to=" + where + " relay=" + candidate.host + " tls=" + level_name +
               " status=deferred (" + decision.reason + ")");
      continue;
    }
    for (const auto& address : candidate.addresses) {
      if (remaining.empty()) break;
      std::vector<std::string> recipients;
      for (const std::size_t i : remaining) recipients.push_back(state.recipients[i].recipient);
      const asio::ip::tcp::endpoint endpoint(address, candidate.port);
      const AttemptResult result = co_await deliver_over_smtp(endpoint, client_, decision.requirement,
                                                              attempt.message.envelope, attempt.message.content,
                                                              recipients, connections_.get());
      std::string relay = candidate.host + "[" + address.to_string() + "]:" + std::to_string(candidate.port);
      // A connection that failed before any mail moved says what TLS it had
      // reached, never "cleartext" (nothing was sent in the clear).
      std::string tls_outcome = result.tls_summary.empty() ? std::string("cleartext") : result.tls_summary;
      if (result.connection_failed && tls_outcome == "cleartext") tls_outcome = "no session";
      std::string prefix = "delivery: " + state.id + ": to=" + where + " relay=" + relay + " tls=" + level_name +
                           " " + tls_outcome;
      if (!result.error.empty()) last_error = result.error + " (" + relay + ")";
      if (result.connection_failed && result.recipients.empty()) {
        log_line(prefix + " status=deferred (" + result.error + ")");
        continue;
      }
      std::vector<std::size_t> still;
      for (const std::size_t i : remaining) {
        auto& rcpt = state.recipients[i];
        const auto it = std::find_if(result.recipients.begin(), result.recipients.end(),
                                     [&](const RecipientResult& r) { return r.recipient == rcpt.recipient; });
        if (it == result.recipients.end()) {
          still.push_back(i);
          continue;
        }
        const int code = it->code != 0 ? it->code : reply_code(it->reply);
        rcpt.last_reply = it->reply;
        answered.insert(i);
        if (code >= 200 && code < 300) {
          rcpt.status = queue::RecipientState::Status::delivered;
          log_line(prefix + " rcpt=<" + rcpt.recipient + "> status=sent (" + it->reply + ")");
        } else if (code >= 500) {
          rcpt.status = queue::RecipientState::Status::failed;
          attempt.failed_now.push_back(i);
          attempt.remote_mta[i] = candidate.host;
          log_line(prefix + " rcpt=<" + rcpt.recipient + "> status=bounced (" + it->reply + ")");
        } else {
          still.push_back(i);
          log_line(prefix + " rcpt=<" + rcpt.recipient + "> status=deferred (" + it->reply + ")");
        }
      }
      remaining = std::move(still);
    }
  }
  limiter.release();
  if (limiter.idle()) destinations_.erase(where);
  // Recipients no server answered in this attempt: say why.
  for (const std::size_t i : remaining)
    if (!answered.count(i)) state.recipients[i].last_reply = "451 4.4.1 " + last_error;
}

asio::awaitable<bool> Scheduler::finish(Attempt& attempt) {
  auto& state = attempt.state;
  const auto& envelope = attempt.message.envelope;
  const std::int64_t now = unix_now();
  ++state.attempts;
  const bool pending = !queue::finished(state);
  const std::int64_t arrival = envelope.received_unix != 0 ? envelope.received_unix : state.first_attempt_unix;
  if (pending && queue::expired(retry_, arrival, now)) {
    for (std::size_t i = 0; i < state.recipients.size(); ++i) {
      auto& rcpt = state.recipients[i];
      if (rcpt.status != queue::RecipientState::Status::pending) continue;
      rcpt.status = queue::RecipientState::Status::failed;
      rcpt.last_reply = "550 5.4.7 message expired in the queue; last error: " + rcpt.last_reply;
      attempt.failed_now.push_back(i);
    }
    log_line("delivery: " + state.id + ": expired after " + std::to_string(state.attempts) + " attempts");
  }

  std::string unreadable;
  if (!attempt.failed_now.empty() && should_bounce(envelope) && !load_content(attempt, unreadable)) {
    // The bounce quotes the message's header: without it, keep the failures
    // pending and bounce them on a later attempt.
    for (const std::size_t i : attempt.failed_now) state.recipients[i].status = queue::RecipientState::Status::pending;
    attempt.failed_now.clear();
  }
  if (!attempt.failed_now.empty() && should_bounce(envelope)) {
    std::vector<FailedRecipient> failed;
    for (const std::size_t i : attempt.failed_now) {
      failed.push_back({state.recipients[i].recipient, state.recipients[i].last_reply,
                        attempt.remote_mta.count(i) ? attempt.remote_mta[i] : std::string()});
    }
    const Bounce bounce = make_bounce(envelope, attempt.message.content, failed, config_.hostname,
                                      std::chrono::system_clock::now());
    const queue::Envelope bounce_env =
        bounce_envelope(envelope, bounce, queue::new_queue_id(), config_.hostname, now);
    if (auto stored = co_await on_disk([&] { return spool_.store(bounce_env, bounce.content); }); !stored) {
      // Keep the failures pending so the bounce is not lost: retried later.
      log_line("delivery: " + state.id + ": cannot spool bounce: " + stored.error());
      for (const std::size_t i : attempt.failed_now)
        state.recipients[i].status = queue::RecipientState::Status::pending;
    } else {
      log_line("delivery: " + state.id + ": sender non-delivery notification: " + bounce_env.id);
      enqueue(bounce_env.id);
    }
  } else if (!attempt.failed_now.empty()) {
    log_line("delivery: " + state.id + ": failed recipients of a null-sender message: no bounce");
  }

  if (queue::finished(state)) {
    // Message first, then state (see queue/delivery_state.hpp).  Not
    // durable, and off the loop all the same: freeing a file's blocks can
    // wait for the device (a synchronous discard on ext4 mounted with
    // `discard` and no journal).
    const auto [removed, state_removed] = co_await on_disk([&] {
      return std::pair{spool_.remove(state.id), queue::remove_state(spool_.directory(), state.id)};
    });
    if (!removed) log_line("delivery: " + state.id + ": " + removed.error());
    if (!state_removed) log_line("delivery: " + state.id + ": " + state_removed.error());
    log_line("delivery: " + state.id + ": removed");
    co_return true;
  }
  // Why the message is still queued, for "mxgate queue list": the reply of
  // the first recipient still pending.
  for (const auto& rcpt : state.recipients) {
    if (rcpt.status == queue::RecipientState::Status::pending) {
      state.last_error = rcpt.last_reply;
      break;
    }
  }
  state.next_attempt_unix = queue::next_attempt(retry_, state.attempts, now);
  if (auto saved = co_await on_disk([&] { return queue::save_state(spool_.directory(), state); }); !saved)
    log_line("delivery: " + state.id + ": cannot save state: " + saved.error());
  co_return false;
}

}  // namespace mxgate::delivery
