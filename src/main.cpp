// mxgate command line: serve, check-config, --version.
//
// Start-up order matters: everything that can fail on configuration (TLS
// keys, spool, Maildir, listening sockets) is done before the first
// connection is accepted, so the process never runs half-configured; root is
// dropped right after the sockets are bound.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <asio/io_context.hpp>
#include <asio/ssl/context.hpp>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include "config/config.hpp"
#include "delivery/delivery_runner.hpp"
#include "delivery/maildir.hpp"
#include "queue/spool.hpp"
#include "server/privileges.hpp"
#include "server/server.hpp"
#include "tls/server_context.hpp"
#include "util/log.hpp"

namespace {

constexpr std::string_view kUsage =
    "usage: mxgate serve --config FILE\n"
    "       mxgate check-config --config FILE\n"
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

int serve(const std::string& path) {
  auto loaded = load(path);
  if (!loaded) return fail(loaded.error());
  const auto& config = loaded->config;
  raise_descriptor_limit(config.limits.max_connections);

  auto spool = mxgate::queue::Spool::open(config.spool);
  if (!spool) return fail("spool error: " + spool.error());
  auto maildir = mxgate::delivery::Maildir::open(config.delivery.maildir);
  if (!maildir) return fail("delivery error: " + maildir.error());

  asio::io_context io(1);
  mxgate::delivery::DeliveryRunner runner(spool.value(), maildir.value());
  mxgate::server::Server server(io, config, loaded->tls, spool.value(),
                                [&runner](const std::string& id) { runner.enqueue(id); });
  if (auto bound = server.bind(); !bound) return fail("listen error: " + bound.error());

  if (!config.user.empty()) {
    if (::geteuid() == 0) {
      if (auto r = mxgate::server::give_to_user(
              config.user, {config.spool, config.delivery.maildir});
          !r)
        return fail("privilege error: " + r.error());
      if (auto r = mxgate::server::drop_privileges(config.user); !r) return fail("privilege error: " + r.error());
      mxgate::log_line("server: running as user " + config.user);
    } else {
      mxgate::log_line("server: not started as root; user = \"" + config.user + "\" ignored");
    }
  }

  runner.start();
  server.start();
  mxgate::log_line("server: mxgate " MXGATE_VERSION " started as " + config.hostname);
  io.run();
  runner.stop();
  mxgate::log_line("server: stopped");
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
  if (args.size() == 3 && args[1] == "--config") {
    const std::string path(args[2]);
    if (args[0] == "serve") return serve(path);
    if (args[0] == "check-config") return check_config(path);
  }
  std::fputs(kUsage.data(), stderr);
  return 2;
}
