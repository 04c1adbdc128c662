// mxgate command line: serve, check-config, queue, quarantine, probe,
// check, --version.
//
// Start-up order matters: everything that can fail on configuration (TLS
// keys, spool, Maildir, listening sockets) is done before the first
// connection is accepted, so the process never runs half-configured; root is
// dropped right after the sockets are bound.
#include <malloc.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <asio/io_context.hpp>
#include <asio/ssl/context.hpp>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "config/config.hpp"
#include <asio/signal_set.hpp>
#include <fstream>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>

#include "delivery/probe.hpp"
#include "dns/resolver_options.hpp"
#include "filter/bayes.hpp"
#include "filter/mime_parser.hpp"
#include "filter/report.hpp"
#include "filter/scanner.hpp"
#include "milter/client.hpp"
#include "queue/quarantine_admin.hpp"
#include "delivery/scheduler.hpp"
#include "queue/queue_admin.hpp"
#include "queue/spool.hpp"
#include "queue/spool_writer.hpp"
#include "server/privileges.hpp"
#include "server/server.hpp"
#include "tls/server_context.hpp"
#include "util/log.hpp"
#include "util/unique_fd.hpp"

namespace {

constexpr std::string_view kUsage =
    "usage: mxgate serve --config FILE\n"
    "       mxgate check-config --config FILE\n"
    "       mxgate queue list [--json] --config FILE\n"
    "       mxgate queue flush --config FILE\n"
    "       mxgate queue delete ID --config FILE\n"
    "       mxgate probe DOMAIN [--json] --config FILE\n"
    "       mxgate quarantine list [--json] --config FILE\n"
    "       mxgate quarantine show ID [--json] --config FILE\n"
    "       mxgate quarantine release ID --config FILE\n"
    "       mxgate quarantine delete ID --config FILE\n"
    "       mxgate learn --spam|--ham MESSAGE-FILE... --config FILE\n"
    "       mxgate check MESSAGE-FILE... [--json] [--client IP [--helo NAME] [--sender ADDR]] --config FILE\n"
    "       mxgate --version\n";

int fail(const std::string& message) {
  std::fprintf(stderr, "%s\n", message.c_str());
  return 1;
}

bool tls_needed(const mxgate::config::Config& config) {
  for (const auto& listener : config.listeners)
    if (listener.tls != mxgate::config::TlsMode::none) return true;
  return false;
}

// Loads everything check-config can verify: the file, and the TLS keys.
struct Loaded {
  mxgate::config::Config config;
  std::shared_ptr<asio::ssl::context> tls;
};

mxgate::Result<Loaded> load(const std::string& path) {
  auto config = mxgate::config::load_file(path);
  if (!config) return mxgate::make_error("config error: " + config.error());
  Loaded loaded{std::move(config.value()), nullptr};
  // Milter endpoints are parsed where they are used; refuse a bad one here.
  for (std::size_t i = 0; i < loaded.config.listeners.size(); ++i) {
    for (std::size_t j = 0; j < loaded.config.listeners[i].milters.size(); ++j) {
      if (auto endpoint = mxgate::milter::parse_milter_endpoint(loaded.config.listeners[i].milters[j]); !endpoint)
        return mxgate::make_error("config error: listener[" + std::to_string(i) + "].milters[" +
                                  std::to_string(j) + "]: " + endpoint.error());
    }
  }
  // The clamd endpoint is parsed where it is used; refuse a bad one here.
  if (auto scanner = mxgate::filter::Scanner::create(loaded.config.filter, loaded.config.hostname); !scanner)
    return mxgate::make_error("config error: " + scanner.error());
  if (tls_needed(loaded.config)) {
    auto tls = mxgate::tls::make_server_context(loaded.config.tls);
    if (!tls) return mxgate::make_error("config error: " + tls.error());
    loaded.tls = std::move(tls.value());
  } else {
    loaded.tls = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  }
  return loaded;
}

// Each session holds one descriptor; the usual soft limit of 1024 would cap
// a gateway below its own max_connections default.
void raise_descriptor_limit(std::size_t max_connections) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  const rlim_t wanted = static_cast<rlim_t>(max_connections) + 64;
  if (limit.rlim_cur >= wanted) return;
  limit.rlim_cur = std::min(wanted, limit.rlim_max);
  ::setrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur < wanted)
    mxgate::log_line("server: descriptor limit " + std::to_string(limit.rlim_cur) +
                     " is below limits.max_connections; raise the hard limit (ulimit -Hn)");
}

// Large messages pass through buffers of a few MiB.  glibc's defaults map
// such buffers fresh for each message and hand them back when freed, so
// every large message paid for first-touch page faults (a third of the CPU
// of bench/run scenario d: 1 MiB over STARTTLS).  Fixed thresholds keep
// freed buffers in the heap for the next message instead; at most
// kMallocTrimBytes of free memory at the top of a heap stays allocated.
constexpr int kMallocMmapBytes = 32 * 1024 * 1024;
constexpr int kMallocTrimBytes = 64 * 1024 * 1024;

void tune_malloc() {
  ::mallopt(M_MMAP_THRESHOLD, kMallocMmapBytes);
  ::mallopt(M_TRIM_THRESHOLD, kMallocTrimBytes);
}

int serve(const std::string& path) {
  tune_malloc();
  auto loaded = load(path);
  if (!loaded) return fail(loaded.error());
  const auto& config = loaded->config;
  raise_descriptor_limit(config.limits.max_connections);

  auto spool = mxgate::queue::Spool::open(config.spool);
  if (!spool) return fail("spool error: " + spool.error());
  auto scheduler = mxgate::delivery::Scheduler::create(config, spool.value());
  if (!scheduler) return fail("delivery error: " + scheduler.error());

  // The writer outlives the server and dies before the event loop: its
  // destructor commits what is still pending and posts the results to the
  // loop (run() only returns once they ran, as each store holds work).
  asio::io_context io(1);
  auto writer = mxgate::queue::SpoolWriter::start(spool.value(), config.queue.sync_threads);
  if (!writer) return fail("spool error: " + writer.error());
  mxgate::server::Server server(io, config, loaded->tls, *writer.value(),
                                [&scheduler](const std::string& id) { scheduler.value()->enqueue(id); });
  // The content filter and its quarantine, a second spool with its own
  // writer (held mail is as durable as queued mail).
  std::unique_ptr<mxgate::filter::Scanner> scanner;
  std::unique_ptr<mxgate::dns::Resolver> filter_resolver;  // destroyed before io (declared after it)
  std::unique_ptr<mxgate::queue::SpoolWriter> quarantine_writer;
  std::optional<mxgate::queue::Spool> quarantine;
  if (config.filter.enabled) {
    auto created = mxgate::filter::Scanner::create(config.filter, config.hostname);
    if (!created) return fail("config error: " + created.error());
    scanner = std::move(created.value());
    // Sender authentication asks DNS from the network thread's own loop.
    auto options = mxgate::dns::resolver_options(config);
    options.query_timeout = std::chrono::seconds(10);
    auto resolver = mxgate::dns::Resolver::create(io, options);
    if (!resolver) return fail("dns error: " + resolver.error());
    filter_resolver = std::move(resolver.value());
    scanner->set_resolver(filter_resolver.get());
    auto opened = mxgate::queue::Spool::open(mxgate::queue::quarantine_directory(config.spool));
    if (!opened) return fail("quarantine error: " + opened.error());
    quarantine.emplace(std::move(opened.value()));
    auto started = mxgate::queue::SpoolWriter::start(*quarantine, 1);
    if (!started) return fail("quarantine error: " + started.error());
    quarantine_writer = std::move(started.value());
    server.set_filter(*scanner, *quarantine_writer);
    mxgate::log_line(scanner->describe());
    asio::co_spawn(io, [&scanner]() -> asio::awaitable<void> {
      const std::string problem = co_await scanner->check_clamd();
      if (!problem.empty())
        mxgate::log_line("filter: clamd does not answer (" + problem + "); mail is tempfailed until it does");
    }, asio::detached);
  } else {
    mxgate::log_line("filter: disabled (filter.enabled = false)");
  }
  if (auto bound = server.bind(); !bound) return fail("listen error: " + bound.error());

  if (!config.user.empty()) {
    if (::geteuid() == 0) {
      std::vector<std::filesystem::path> owned{config.spool};
      if (!config.delivery.maildir.empty()) owned.push_back(config.delivery.maildir);
      if (auto r = mxgate::server::give_to_user(config.user, owned); !r)
        return fail("privilege error: " + r.error());
      if (auto r = mxgate::server::drop_privileges(config.user); !r) return fail("privilege error: " + r.error());
      mxgate::log_line("server: running as user " + config.user);
    } else {
      mxgate::log_line("server: not started as root; user = \"" + config.user + "\" ignored");
    }
  }

  // "mxgate queue flush" finds us through the pid file and sends SIGUSR1;
  // the handler is in place before the file exists.
  asio::signal_set flush_signal(io, mxgate::queue::kFlushSignal);
  std::function<void()> wait_flush = [&] {
    flush_signal.async_wait([&](const asio::error_code& ec, int) {
      if (ec) return;
      mxgate::log_line("server: queue flush requested");
      scheduler.value()->flush();
      wait_flush();
    });
  };
  wait_flush();
  server.on_shutdown([&] { flush_signal.cancel(); });
  const auto pid_file = mxgate::queue::pid_file(config.spool);
  std::ofstream(pid_file) << ::getpid() << "\n";

  scheduler.value()->start();
  server.start();
  mxgate::log_line("server: mxgate " MXGATE_VERSION " started as " + config.hostname);
  io.run();
  const auto stats = writer.value()->stats();
  mxgate::log_line("spool: " + std::to_string(stats.messages) + " messages stored in " +
                   std::to_string(stats.batches) + " batches, largest " + std::to_string(stats.largest_batch));
  scheduler.value()->stop();
  std::filesystem::remove(pid_file);
  mxgate::log_line("server: stopped");
  return 0;
}

// mxgate queue list|flush|delete: works on a running or a stopped gateway.
int queue_command(const std::vector<std::string_view>& args, const std::string& path) {
  auto config = mxgate::config::load_file(path);
  if (!config) return fail("config error: " + config.error());
  const auto& spool = config->spool;
  if (args[0] == "list") {
    const bool json = args.size() == 2 && args[1] == "--json";
    if (args.size() > 2 || (args.size() == 2 && !json)) return fail(std::string(kUsage));
    auto text = mxgate::queue::queue_list(spool, json);
    if (!text) return fail("queue error: " + text.error());
    std::fputs(text->c_str(), stdout);
    return 0;
  }
  if (args[0] == "flush" && args.size() == 1) {
    auto text = mxgate::queue::queue_flush(spool);
    if (!text) return fail("queue error: " + text.error());
    std::printf("%s\n", text->c_str());
    return 0;
  }
  if (args[0] == "delete" && args.size() == 2) {
    if (auto r = mxgate::queue::queue_delete(spool, args[1]); !r) return fail("queue error: " + r.error());
    std::printf("deleted %s\n", std::string(args[1]).c_str());
    return 0;
  }
  std::fputs(kUsage.data(), stderr);
  return 2;
}

// mxgate probe DOMAIN [--json]: DNS, TLSA and one SMTP session per MX host; never sends MAIL.
int probe_command(const std::vector<std::string_view>& args, const std::string& path) {
  const bool json = args.size() == 2 && args[1] == "--json";
  if (args.size() > 2 || (args.size() == 2 && !json)) return fail(std::string(kUsage));
  auto config = mxgate::config::load_file(path);
  if (!config) return fail("config error: " + config.error());
  auto report = mxgate::delivery::run_probe(config.value(), std::string(args[0]));
  if (!report) return fail("probe error: " + report.error());
  const std::string text = json ? mxgate::delivery::probe_json(*report) : mxgate::delivery::probe_text(*report);
  std::fputs(text.c_str(), stdout);
  return 0;
}

// mxgate quarantine list|show|release|delete: works on a running or a stopped gateway.
int quarantine_command(const std::vector<std::string_view>& args, const std::string& path) {
  auto config = mxgate::config::load_file(path);
  if (!config) return fail("config error: " + config.error());
  const auto& spool = config->spool;
  const bool json = args.back() == "--json";
  const std::size_t n = args.size() - (json ? 1 : 0);
  if (args[0] == "list" && n == 1) {
    auto text = mxgate::queue::quarantine_list(spool, json);
    if (!text) return fail(text.error());
    std::fputs(text->c_str(), stdout);
    return 0;
  }
  if (args[0] == "show" && n == 2) {
    auto text = mxgate::queue::quarantine_show(spool, args[1], json);
    if (!text) return fail(text.error());
    std::fputs(text->c_str(), stdout);
    return 0;
  }
  if (args[0] == "release" && n == 2 && !json) {
    auto text = mxgate::queue::quarantine_release(spool, args[1]);
    if (!text) return fail(text.error());
    std::printf("%s\n", text->c_str());
    return 0;
  }
  if (args[0] == "delete" && n == 2 && !json) {
    if (auto r = mxgate::queue::quarantine_delete(spool, args[1]); !r) return fail(r.error());
    std::printf("deleted %s\n", std::string(args[1]).c_str());
    return 0;
  }
  std::fputs(kUsage.data(), stderr);
  return 2;
}

// mxgate check FILE... [--json] [--client IP [--helo NAME] [--sender ADDR]]:
// the content filter's verdict on message files, with clamd when one is
// configured; nothing is stored or sent.  With --client, sender
// authentication (SPF, DKIM, DMARC) runs too, through [dns], as for mail from
// that client.  With several files, one report each, in order (JSON: one
// object per line), so an evaluation pays for the start-up once.
int check_command(const std::vector<std::string_view>& args, const std::string& path) {
  bool json = false;
  mxgate::filter::ScanContext context;
  std::vector<std::string_view> files;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const bool has_value = i + 1 < args.size();
    if (args[i] == "--json") {
      json = true;
    } else if (args[i] == "--client" && has_value) {
      context.client_address = std::string(args[++i]);
    } else if (args[i] == "--helo" && has_value) {
      context.helo = std::string(args[++i]);
    } else if (args[i] == "--sender" && has_value) {
      context.sender = std::string(args[++i]);
    } else if (args[i].substr(0, 2) == "--") {
      return fail(std::string(kUsage));
    } else {
      files.push_back(args[i]);
    }
  }
  if (files.empty()) return fail(std::string(kUsage));
  auto config = mxgate::config::load_file(path);
  if (!config) return fail("config error: " + config.error());
  auto scanner = mxgate::filter::Scanner::create(config->filter, config->hostname);
  if (!scanner) return fail("config error: " + scanner.error());
  asio::io_context io(1);
  std::unique_ptr<mxgate::dns::Resolver> resolver;
  if (!context.client_address.empty()) {
    auto created = mxgate::dns::Resolver::create(io, mxgate::dns::resolver_options(config.value()));
    if (!created) return fail("dns error: " + created.error());
    resolver = std::move(created.value());
    scanner.value()->set_resolver(resolver.get());
  }
  int status = 0;
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    std::string content;
    for (const std::string_view file : files) {
      content.clear();  // read_file appends
      if (const int err = mxgate::read_file(std::string(file), content); err != 0) {
        std::fprintf(stderr, "cannot read %s: %s\n", std::string(file).c_str(), mxgate::errno_text(err).c_str());
        status = 1;
        continue;
      }
      std::string report = co_await mxgate::filter::report(*scanner.value(), content, context, json);
      if (files.size() > 1 && !json) report = std::string(file) + ": " + report;
      std::fputs(report.c_str(), stdout);
    }
    resolver.reset();  // lets io.run() return
  }, asio::detached);
  io.run();
  return status;
}

// mxgate learn --spam|--ham FILE...: trains the Bayesian classifier's store
// ([filter] bayes_db).  A running gateway sees the new counts within a
// minute (it reopens a store that changed).
int learn_command(const std::vector<std::string_view>& args, const std::string& path) {
  if (args.size() < 2 || (args[0] != "--spam" && args[0] != "--ham")) return fail(std::string(kUsage));
  const bool spam = args[0] == "--spam";
  auto config = mxgate::config::load_file(path);
  if (!config) return fail("config error: " + config.error());
  auto store = mxgate::filter::open_bayes(config->filter.bayes_db, true);
  if (!store) return fail(store.error());
  const std::vector<std::filesystem::path> files(args.begin() + 1, args.end());
  mxgate::filter::MimeLimits limits;
  limits.max_depth = config->filter.max_mime_depth;
  limits.max_parts = config->filter.max_mime_parts;
  limits.max_decoded_bytes = config->filter.max_decoded_size;
  auto summary = mxgate::filter::learn_messages(*store.value(), spam, files, limits);
  if (!summary) return fail(summary.error());
  store.value().reset();  // closes the database (and checkpoints its WAL) before the chown below
  // Learning as root must not leave files the gateway's user cannot open
  // (a WAL reader writes the -shm file).
  if (::geteuid() == 0 && !config->user.empty()) {
    std::vector<std::filesystem::path> owned;
    for (const char* suffix : {"", "-wal", "-shm"}) {
      std::filesystem::path file = config->filter.bayes_db;
      file += suffix;
      std::error_code ec;
      if (std::filesystem::exists(file, ec)) owned.push_back(file);
    }
    if (auto given = mxgate::server::give_to_user(config->user, owned); !given)
      return fail("learn: " + given.error());
  }
  std::printf("learned %zu as %s (%zu already known); the store holds %zu spam and %zu ham\n", summary->learned,
              spam ? "spam" : "ham", summary->skipped, summary->spam_total, summary->ham_total);
  return 0;
}

int check_config(const std::string& path) {
  auto loaded = load(path);
  if (!loaded) return fail(loaded.error());
  std::printf("ok\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);  // a peer that hangs up is an error code, not a death
  const std::vector<std::string_view> args(argv + 1, argv + argc);
  if (args.size() == 1 && (args[0] == "--version" || args[0] == "version")) {
    std::printf("mxgate %s\n", MXGATE_VERSION);
    return 0;
  }
  if (args.size() >= 4 && args[0] == "queue" && args[args.size() - 2] == "--config") {
    const std::vector<std::string_view> rest(args.begin() + 1, args.end() - 2);
    if (!rest.empty()) return queue_command(rest, std::string(args.back()));
  }
  if (args.size() >= 4 && args[0] == "probe" && args[args.size() - 2] == "--config") {
    const std::vector<std::string_view> rest(args.begin() + 1, args.end() - 2);
    return probe_command(rest, std::string(args.back()));
  }
  if (args.size() >= 4 && args[0] == "quarantine" && args[args.size() - 2] == "--config") {
    const std::vector<std::string_view> rest(args.begin() + 1, args.end() - 2);
    if (!rest.empty()) return quarantine_command(rest, std::string(args.back()));
  }
  if (args.size() >= 4 && args[0] == "learn" && args[args.size() - 2] == "--config") {
    const std::vector<std::string_view> rest(args.begin() + 1, args.end() - 2);
    return learn_command(rest, std::string(args.back()));
  }
  if (args.size() >= 4 && args[0] == "check" && args[args.size() - 2] == "--config") {
    const std::vector<std::string_view> rest(args.begin() + 1, args.end() - 2);
    if (!rest.empty()) return check_command(rest, std::string(args.back()));
  }
  if (args.size() == 3 && args[1] == "--config") {
    const std::string path(args[2]);
    if (args[0] == "serve") return serve(path);
    if (args[0] == "check-config") return check_config(path);
  }
  std::fputs(kUsage.data(), stderr);
  return 2;
}
