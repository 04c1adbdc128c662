// The libunbound-backed Resolver.
//
// Structure
// - Engine owns the ub_ctx, an asio::posix::stream_descriptor on ub_fd(ctx)
//   (released, never closed: the fd is libunbound's) and the pending queries
//   by address.  It is shared: the Resolver and every suspended lookup hold
//   it, so a lookup that resumes after the Resolver is gone still finds a
//   live Engine (in shut-down state).
// - A Query is one ub_resolve_async.  Its steady_timer is both the deadline
//   and the event: it is set to expire at the timeout, and the libunbound
//   callback stores the result and cancels it.  The waiter checks `done`
//   before and after waiting, so it does not matter whether the answer or the
//   timer comes first.  A timed-out query is ub_cancel'led, so its callback
//   never runs.
// - The descriptor is watched only while queries are pending (a permanently
//   armed wait would keep io.run() from returning); every readable event runs
//   ub_process, which invokes the callbacks.
//
// GCC 12: no temporaries with destructors inside co_await expressions (they
// can be destroyed twice); results are taken from the Query after the await.
#include "dns/resolver.hpp"

#include <unbound.h>

#include <asio/posix/stream_descriptor.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <unordered_map>
#include <utility>

#include "dns/wire.hpp"

namespace mxgate::dns {
namespace {

constexpr int kTypeA = 1;
constexpr int kTypeMx = 15;
constexpr int kTypeAaaa = 28;
constexpr int kTypeTlsa = 52;
constexpr int kTypeTxt = 16;
constexpr int kClassIn = 1;
constexpr int kRcodeNxdomain = 3;

struct ContextDelete {
  void operator()(ub_ctx* ctx) const { ub_ctx_delete(ctx); }
};
using ContextPtr = std::unique_ptr<ub_ctx, ContextDelete>;

struct ResultFree {
  void operator()(ub_result* result) const { ub_resolve_free(result); }
};
using ResultPtr = std::unique_ptr<ub_result, ResultFree>;

class Engine;

struct Query {
  explicit Query(asio::io_context& io) : timer(io) {}
  int async_id = 0;
  asio::steady_timer timer;
  bool done = false;
  ResultPtr result;     // set when libunbound answered
  std::string failure;  // set when it did not (error, timeout, shutdown)
};

std::string rcode_text(int rcode) {
  switch (rcode) {
    case 1:
      return "FORMERR";
    case 2:
      return "SERVFAIL";
    case 4:
      return "NOTIMP";
    case 5:
      return "REFUSED";
    default:
      return "rcode " + std::to_string(rcode);
  }
}

class Engine : public std::enable_shared_from_this<Engine> {
 public:
  Engine(asio::io_context& io, ContextPtr ctx, std::chrono::milliseconds timeout)
      : io_(io), ctx_(std::move(ctx)), fd_(io, ub_fd(ctx_.get())), timeout_(timeout) {}

  ~Engine() {
    shutdown();
    asio::error_code ignored;
    fd_.cancel(ignored);
    fd_.release();  // libunbound owns and closes the fd in ub_ctx_delete
  }

  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Starts a lookup.  Never null; when it cannot start, the query is already
  // done with a failure.
  std::shared_ptr<Query> submit(const std::string& name, int type) {
    auto query = std::make_shared<Query>(io_);
    if (closed_) {
      finish(*query, "resolver shut down");
      return query;
    }
    if (name.empty() || name.find('\0') != std::string::npos) {
      finish(*query, "invalid domain name");
      return query;
    }
    query->timer.expires_after(timeout_);
    const std::string absolute = name + ".";
    const int err = ub_resolve_async(ctx_.get(), absolute.c_str(), type, kClassIn, query.get(),
                                     &Engine::on_result, &query->async_id);
    if (err != 0) {
      finish(*query, std::string("libunbound: ") + ub_strerror(err));
      return query;
    }
    pending_.emplace(query.get(), query);
    arm();
    return query;
  }

  // Suspends until query is done: answered, failed or timed out.
  asio::awaitable<void> wait(Query& query) {
    if (!query.done) {
      asio::error_code ec;
      co_await query.timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    if (!query.done) {  // the deadline passed first
      ub_cancel(ctx_.get(), query.async_id);
      pending_.erase(&query);
      finish(query, "timed out after " + std::to_string(timeout_.count()) + " ms");
      if (pending_.empty()) {
        asio::error_code ignored;
        fd_.cancel(ignored);  // nothing to wait for: let io.run() return
      }
    }
  }

  // Fails every pending query; later submits fail at once.
  void shutdown() {
    if (closed_) {
      return;
    }
    closed_ = true;
    auto pending = std::move(pending_);
    pending_.clear();
    for (auto& [key, query] : pending) {
      ub_cancel(ctx_.get(), query->async_id);
      finish(*query, "resolver shut down");
    }
    asio::error_code ignored;
    fd_.cancel(ignored);
  }

 private:
  static void finish(Query& query, std::string failure) {
    query.done = true;
    query.failure = std::move(failure);
    query.timer.cancel();
  }

  // Called only from ub_process in on_readable, which sets processing_.  data
  // is looked up before it is used, so an answer for a query that is no
  // longer pending (ub_cancel promises there is none) is dropped unread.
  // noexcept: an exception must not unwind through libunbound's C frames.
  static void on_result(void* data, int err, ub_result* raw) noexcept {
    ResultPtr result(raw);
    Engine* engine = processing_;
    if (engine == nullptr) {
      return;
    }
    auto it = engine->pending_.find(static_cast<Query*>(data));
    if (it == engine->pending_.end()) {
      return;
    }
    std::shared_ptr<Query> query = std::move(it->second);  // lives until this returns
    engine->pending_.erase(it);
    if (err != 0 || !result) {
      finish(*query, std::string("libunbound: ") + ub_strerror(err != 0 ? err : UB_NOMEM));
      return;
    }
    query->result = std::move(result);
    finish(*query, {});
  }

  void arm() {
    if (waiting_ || closed_ || pending_.empty()) {
      return;
    }
    waiting_ = true;
    fd_.async_wait(asio::posix::descriptor_base::wait_read,
                   [weak = weak_from_this()](const asio::error_code& ec) {
                     if (auto self = weak.lock()) {
                       self->on_readable(ec);
                     }
                   });
  }

  void on_readable(const asio::error_code& ec) {
    waiting_ = false;
    if (closed_ || ec == asio::error::operation_aborted) {
      return;
    }
    int err = UB_PIPE;
    if (!ec) {
      processing_ = this;
      err = ub_process(ctx_.get());
      processing_ = nullptr;
    }
    if (err != 0) {
      // The pipe to libunbound's thread is broken: nothing more will come.
      auto pending = std::move(pending_);
      pending_.clear();
      for (auto& [key, query] : pending) {
        finish(*query, std::string("libunbound: ") + ub_strerror(err));
      }
      return;
    }
    arm();
  }

  asio::io_context& io_;
  ContextPtr ctx_;
  asio::posix::stream_descriptor fd_;
  std::chrono::milliseconds timeout_;
  bool waiting_ = false;
  bool closed_ = false;
  std::unordered_map<Query*, std::shared_ptr<Query>> pending_;
  static thread_local Engine* processing_;
};

thread_local Engine* Engine::processing_ = nullptr;

Security security_of(const ub_result& r) {
  if (r.secure) {
    return Security::secure;
  }
  return r.bogus ? Security::bogus : Security::insecure;
}

int strength(Security s) {
  switch (s) {
    case Security::secure:
      return 2;
    case Security::insecure:
      return 1;
    case Security::bogus:
      return 0;
  }
  return 0;
}

template <class T, class Parse>
Answer<T> translate(const Query& query, Parse parse, std::string_view type) {
  Answer<T> answer;
  if (!query.result) {
    answer.status = Status::failure;
    answer.reason = query.failure;
    return answer;
  }
  const ub_result& r = *query.result;
  answer.security = security_of(r);
  if (answer.security == Security::bogus) {
    answer.status = Status::failure;
    answer.reason =
        std::string("DNSSEC validation failed: ") + (r.why_bogus != nullptr ? r.why_bogus : "bogus answer");
    return answer;
  }
  if (r.rcode == kRcodeNxdomain) {
    answer.status = Status::nxdomain;
    return answer;
  }
  if (r.rcode != 0) {
    answer.status = Status::failure;
    answer.reason = rcode_text(r.rcode);
    return answer;
  }
  if (!r.havedata || r.data == nullptr) {
    answer.status = Status::nodata;
    return answer;
  }
  for (int i = 0; r.data[i] != nullptr; ++i) {
    const wire::Bytes rdata(reinterpret_cast<const std::uint8_t*>(r.data[i]),
                            static_cast<std::size_t>(r.len[i]));
    auto record = parse(rdata);
    if (!record) {
      answer.status = Status::failure;
      answer.records.clear();
      answer.reason = "malformed " + std::string(type) + " answer: " + record.error();
      return answer;
    }
    answer.records.push_back(std::move(record.value()));
  }
  answer.status = Status::ok;
  return answer;
}

// A and AAAA into one answer: ok when either has addresses (A's first);
// otherwise failure if either failed, nxdomain if A says so, else nodata.
// Security is the weaker of the two.
Answer<asio::ip::address> merge(Answer<asio::ip::address> a, Answer<asio::ip::address> aaaa) {
  Answer<asio::ip::address> out;
  out.security = strength(aaaa.security) < strength(a.security) ? aaaa.security : a.security;
  out.records = std::move(a.records);
  out.records.insert(out.records.end(), aaaa.records.begin(), aaaa.records.end());
  for (const auto* part : {&a, &aaaa}) {
    if (!part->reason.empty()) {
      if (!out.reason.empty()) {
        out.reason += "; ";
      }
      out.reason += (part == &a ? "A: " : "AAAA: ") + part->reason;
    }
  }
  if (!out.records.empty()) {
    out.status = Status::ok;
  } else if (a.status == Status::failure || aaaa.status == Status::failure) {
    out.status = Status::failure;
  } else if (a.status == Status::nxdomain) {
    out.status = Status::nxdomain;
  } else {
    out.status = Status::nodata;
  }
  return out;
}

bool is_loopback(const std::string& address) {
  const std::string host = address.substr(0, address.find('@'));
  asio::error_code ec;
  const auto ip = asio::ip::make_address(host, ec);
  return !ec && ip.is_loopback();
}

Result<void> check_stub_address(const StubZone& zone, const std::string& address) {
  const auto at = address.find('@');
  const std::string host = address.substr(0, at);
  asio::error_code ec;
  asio::ip::make_address(host, ec);
  bool ok = !ec;
  if (ok && at != std::string::npos) {
    const std::string port = address.substr(at + 1);
    ok = !port.empty() && port.size() <= 5 && port.find_first_not_of("0123456789") == std::string::npos &&
         std::stoul(port) >= 1 && std::stoul(port) <= 65535;
  }
  if (!ok) {
    return make_error("dns: stub zone " + zone.name + ": address \"" + address + "\" is not IP or IP@PORT");
  }
  return {};
}

Result<void> check(int err, const std::string& what) {
  if (err != 0) {
    return make_error("dns: " + what + ": " + ub_strerror(err));
  }
  return {};
}

// libunbound reads trust anchors and checks most settings only when the
// context is finalized (at its first lookup).  Finalize now with a lookup it
// answers from its built-in local data, collecting its log to name the
// problem.
Result<void> finalize(ub_ctx* ctx) {
  char* log_text = nullptr;
  std::size_t log_size = 0;
  FILE* log = open_memstream(&log_text, &log_size);
  if (log != nullptr) {
    ub_ctx_debugout(ctx, log);
  }
  ub_result* raw = nullptr;
  const int err = ub_resolve(ctx, "localhost.", kTypeA, kClassIn, &raw);
  ResultPtr result(raw);
  std::string text;
  if (log != nullptr) {
    ub_ctx_debugout(ctx, stderr);
    std::fclose(log);
    text.assign(log_text, log_size);
    std::free(log_text);
  }
  if (err != 0) {
    // Log lines look like "[1700000000] libunbound[42:0] error: TEXT".
    std::string message = std::string("dns: invalid resolver options: ") + ub_strerror(err);
    std::string_view rest = text;
    const char* separator = ": ";
    while (!rest.empty()) {
      const auto nl = rest.find('\n');
      std::string_view line = rest.substr(0, nl);
      rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
      if (const auto tag = line.find("error: "); tag != std::string_view::npos) {
        line.remove_prefix(tag + std::string_view("error: ").size());
      }
      if (!line.empty()) {
        message.append(separator).append(line);
        separator = "; ";
      }
    }
    return make_error(message);
  }
  return {};
}

// The lookups are free coroutines that take the Engine by value: the
// awaitable owns its Engine from the moment it is created, so it may be
// started, and resumed, after the Resolver is gone (it then fails with
// "resolver shut down").
asio::awaitable<Answer<MxRecord>> lookup_mx(std::shared_ptr<Engine> engine, std::string domain) {
  const std::string name = wire::normalize_name(domain);
  std::shared_ptr<Query> query = engine->submit(name, kTypeMx);
  co_await engine->wait(*query);
  co_return translate<MxRecord>(*query, wire::parse_mx, "MX");
}

asio::awaitable<Answer<asio::ip::address>> lookup_addresses(std::shared_ptr<Engine> engine,
                                                            std::string host) {
  const std::string name = wire::normalize_name(host);
  std::shared_ptr<Query> a = engine->submit(name, kTypeA);
  std::shared_ptr<Query> aaaa = engine->submit(name, kTypeAaaa);
  co_await engine->wait(*a);
  co_await engine->wait(*aaaa);
  Answer<asio::ip::address> a_answer = translate<asio::ip::address>(*a, wire::parse_a, "A");
  Answer<asio::ip::address> aaaa_answer = translate<asio::ip::address>(*aaaa, wire::parse_aaaa, "AAAA");
  co_return merge(std::move(a_answer), std::move(aaaa_answer));
}

asio::awaitable<Answer<TlsaRecord>> lookup_tlsa(std::shared_ptr<Engine> engine, std::uint16_t port,
                                                std::string host) {
  const std::string name = wire::tlsa_owner(port, host);
  std::shared_ptr<Query> query = engine->submit(name, kTypeTlsa);
  co_await engine->wait(*query);
  co_return translate<TlsaRecord>(*query, wire::parse_tlsa, "TLSA");
}

asio::awaitable<Answer<std::string>> lookup_txt(std::shared_ptr<Engine> engine, std::string name) {
  std::shared_ptr<Query> query = engine->submit(wire::normalize_name(name), kTypeTxt);
  co_await engine->wait(*query);
  co_return translate<std::string>(*query, wire::parse_txt, "TXT");
}

class UnboundResolver final : public Resolver {
 public:
  explicit UnboundResolver(std::shared_ptr<Engine> engine) : engine_(std::move(engine)) {}
  ~UnboundResolver() override { engine_->shutdown(); }

  asio::awaitable<Answer<MxRecord>> mx(std::string domain) override {
    return lookup_mx(engine_, std::move(domain));
  }
  asio::awaitable<Answer<asio::ip::address>> addresses(std::string host) override {
    return lookup_addresses(engine_, std::move(host));
  }
  asio::awaitable<Answer<TlsaRecord>> tlsa(std::uint16_t port, std::string host) override {
    return lookup_tlsa(engine_, port, std::move(host));
  }
  asio::awaitable<Answer<std::string>> txt(std::string name) override {
    return lookup_txt(engine_, std::move(name));
  }

 private:
  std::shared_ptr<Engine> engine_;
};

}  // namespace

Result<std::unique_ptr<Resolver>> Resolver::create(asio::io_context& io, const ResolverOptions& options) {
  if (options.query_timeout.count() <= 0) {
    return make_error("dns: query timeout must be positive");
  }
  ContextPtr ctx(ub_ctx_create());
  if (!ctx) {
    return make_error("dns: cannot create the libunbound context");
  }
  // Threads, not the default fork: mxgate has threads of its own.
  if (auto r = check(ub_ctx_async(ctx.get(), 1), "async mode"); !r) {
    return Error{r.error()};
  }
  for (const auto& file : options.trust_anchor_files) {
    if (!std::ifstream(file).good()) {
      return make_error("dns: trust anchor file " + file.string() + ": cannot be read");
    }
    if (auto r = check(ub_ctx_add_ta_file(ctx.get(), file.c_str()), "trust anchor file " + file.string());
        !r) {
      return Error{r.error()};
    }
  }
  for (const auto& anchor : options.trust_anchors) {
    if (auto r = check(ub_ctx_add_ta(ctx.get(), anchor.c_str()), "trust anchor \"" + anchor + "\""); !r) {
      return Error{r.error()};
    }
  }
  bool loopback = false;
  for (const auto& zone : options.stub_zones) {
    const std::string name = wire::normalize_name(zone.name);
    if (name.empty()) {
      return make_error("dns: stub zone with an empty name");
    }
    if (zone.addresses.empty()) {
      return make_error("dns: stub zone " + name + ": no addresses");
    }
    for (const auto& address : zone.addresses) {
      if (auto r = check_stub_address(zone, address); !r) {
        return Error{r.error()};
      }
      if (auto r = check(ub_ctx_set_stub(ctx.get(), name.c_str(), address.c_str(), 0),
                         "stub zone " + name + " address " + address);
          !r) {
        return Error{r.error()};
      }
      loopback = loopback || is_loopback(address);
    }
  }
  // libunbound answers special-use names (test., invalid., home.arpa., ...)
  // from built-in local zones.  A local zone of any type on the stub zone
  // itself takes precedence (the most specific local zone decides), and a
  // transparent one without local data lets every query through to the
  // stub.  ("local-zone: test. nodefault" would be the unbound.conf way, but
  // libunbound 1.17's ub_ctx_set_option stores a nodefault name together
  // with the word "nodefault", so it never matches.)
  for (const auto& zone : options.stub_zones) {
    const std::string value = wire::normalize_name(zone.name) + ". transparent";
    if (auto r = check(ub_ctx_set_option(ctx.get(), "local-zone:", value.c_str()), "local-zone " + value);
        !r) {
      return Error{r.error()};
    }
  }
  if (loopback) {
    if (auto r =
            check(ub_ctx_set_option(ctx.get(), "do-not-query-localhost:", "no"), "do-not-query-localhost");
        !r) {
      return Error{r.error()};
    }
  }
  if (auto r = finalize(ctx.get()); !r) {
    return Error{r.error()};
  }
  auto engine = std::make_shared<Engine>(io, std::move(ctx), options.query_timeout);
  return std::unique_ptr<Resolver>(std::make_unique<UnboundResolver>(std::move(engine)));
}

std::string_view to_string(Security security) {
  switch (security) {
    case Security::secure:
      return "secure";
    case Security::insecure:
      return "insecure";
    case Security::bogus:
      return "bogus";
  }
  return "unknown";
}

}  // namespace mxgate::dns
