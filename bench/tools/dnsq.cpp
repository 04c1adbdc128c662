// dnsq: asks mxgate's DNSSEC-validating resolver (src/dns) and prints what it
// answered.  A test tool: tests/integration/test_dns_resolver.py runs it
// against the DNS test bed (tests/integration/dnsbed.py).
//
// usage: dnsq [options] TYPE NAME [TYPE NAME ...]
//   TYPE  MX | ADDR (A and AAAA, Resolver::addresses; "A" is the same) |
//         TLSA (NAME is _PORT._tcp.HOST)
//   --stub ZONE=ADDR[,ADDR...]   stub zone, ADDR as IP or IP@PORT (repeatable)
//   --ta RR                      trust anchor, a DS or DNSKEY RR (repeatable)
//   --ta-file PATH               trust anchor file (repeatable)
//   --timeout-ms N               per-query timeout (default 30000)
//   --destroy-after-ms N         destroy the Resolver N ms after the queries
//                                start (tests cancellation of pending queries)
//
// All queries run concurrently on one io_context.  For each, in the order
// given:
//   query TYPE NAME
//   status=ok|nxdomain|nodata|failure security=secure|insecure|bogus
//   elapsed_ms=N
//   reason=TEXT                  only when there is one
//   one line per record: "PREF HOST" (MX; "." for the null MX host ""),
//   the address (ADDR), "USAGE SELECTOR MTYPE HEX" (TLSA, lower-case hex)
// Exit status: 0 when every query got an answer (of any status), 1 when the
// resolver could not be created, 2 on a usage error.
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "dns/resolver.hpp"
#include "resolver_args.hpp"

namespace {

using mxgate::dns::Answer;
using mxgate::dns::Resolver;
using mxgate::dns::Status;

constexpr std::string_view kUsage =
    "usage: dnsq [--stub ZONE=ADDR[,ADDR...]]... [--ta RR]... [--ta-file PATH]...\n"
    "            [--timeout-ms N] [--destroy-after-ms N] TYPE NAME [TYPE NAME ...]\n"
    "TYPE: MX, ADDR (or A: A and AAAA), TLSA (NAME = _PORT._tcp.HOST)\n";

struct Job {
  std::string type;
  std::string name;
  std::string output;
};

std::string_view to_string(Status status) {
  switch (status) {
    case Status::ok:
      return "ok";
    case Status::nxdomain:
      return "nxdomain";
    case Status::nodata:
      return "nodata";
    case Status::failure:
      return "failure";
  }
  return "?";
}


template <class T, class Print>
std::string render(const Answer<T>& answer, std::chrono::steady_clock::duration elapsed, Print print) {
  std::ostringstream out;
  out << "status=" << to_string(answer.status) << " security=" << mxgate::dns::to_string(answer.security)
      << "\n";
  out << "elapsed_ms=" << std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count() << "\n";
  if (!answer.reason.empty()) {
    out << "reason=" << answer.reason << "\n";
  }
  for (const auto& record : answer.records) {
    print(out, record);
    out << "\n";
  }
  return out.str();
}

// Each lookup's awaitable is a named local first: GCC 12 can destroy
// temporaries inside a co_await expression twice.
asio::awaitable<void> run_job(Resolver* resolver, Job& job) {
  const auto start = std::chrono::steady_clock::now();
  if (job.type == "MX") {
    asio::awaitable<Answer<mxgate::dns::MxRecord>> lookup = resolver->mx(job.name);
    Answer<mxgate::dns::MxRecord> answer = co_await std::move(lookup);
    job.output =
        render(answer, std::chrono::steady_clock::now() - start, [](std::ostream& out, const auto& mx) {
          out << mx.preference << " " << (mx.host.empty() ? "." : mx.host);
        });
  } else if (job.type == "ADDR" || job.type == "A") {
    asio::awaitable<Answer<asio::ip::address>> lookup = resolver->addresses(job.name);
    Answer<asio::ip::address> answer = co_await std::move(lookup);
    job.output = render(answer, std::chrono::steady_clock::now() - start,
                        [](std::ostream& out, const auto& address) { out << address.to_string(); });
  } else {  // TLSA, checked in main
    const std::string_view rest = std::string_view(job.name).substr(1);
    const auto dot = rest.find('.');
    const auto port = static_cast<std::uint16_t>(*mxgate::bench::parse_number(rest.substr(0, dot)));
    std::string host(rest.substr(dot + std::string_view("._tcp.").size()));
    asio::awaitable<Answer<mxgate::dns::TlsaRecord>> lookup = resolver->tlsa(port, std::move(host));
    Answer<mxgate::dns::TlsaRecord> answer = co_await std::move(lookup);
    job.output =
        render(answer, std::chrono::steady_clock::now() - start, [](std::ostream& out, const auto& t) {
          out << int{t.usage} << " " << int{t.selector} << " " << int{t.matching_type} << " ";
          static constexpr char kHex[] = "0123456789abcdef";
          for (std::uint8_t b : t.data) {
            out << kHex[b >> 4] << kHex[b & 15];
          }
        });
  }
}

bool valid_tlsa_name(std::string_view name) {
  // _PORT._tcp.HOST
  if (name.size() < 2 || name[0] != '_') {
    return false;
  }
  const auto dot = name.find('.');
  if (dot == std::string_view::npos) {
    return false;
  }
  const auto port = mxgate::bench::parse_number(name.substr(1, dot - 1));
  return port && *port >= 1 && *port <= 65535 && name.substr(dot).starts_with("._tcp.") &&
         name.size() > dot + std::string_view("._tcp.").size();
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string_view> args(argv + 1, argv + argc);
  mxgate::dns::ResolverOptions options;
  std::optional<unsigned long> destroy_after_ms;
  std::vector<Job> jobs;
  auto usage = [](const std::string& why) {
    std::fprintf(stderr, "dnsq: %s\n%s", why.c_str(), kUsage.data());
    return 2;
  };
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    const bool has_value = i + 1 < args.size();
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage.data(), stdout);
      return 0;
    }
    if (arg.starts_with("--")) {
      if (!has_value) {
        return usage(std::string(arg) + " needs a value");
      }
      const std::string_view value = args[++i];
      if (auto applied = mxgate::bench::apply_resolver_arg(arg, value, options)) {
        if (!applied->empty()) {
          return usage(*applied);
        }
      } else if (arg == "--destroy-after-ms") {
        destroy_after_ms = mxgate::bench::parse_number(value);
        if (!destroy_after_ms) {
          return usage("--destroy-after-ms wants a number");
        }
      } else {
        return usage("unknown option " + std::string(arg));
      }
      continue;
    }
    if (!has_value) {
      return usage("TYPE without NAME");
    }
    Job job{std::string(arg), std::string(args[++i]), {}};
    if (job.type != "MX" && job.type != "ADDR" && job.type != "A" && job.type != "TLSA") {
      return usage("unknown TYPE " + job.type);
    }
    if (job.type == "TLSA" && !valid_tlsa_name(job.name)) {
      return usage("TLSA wants NAME as _PORT._tcp.HOST");
    }
    jobs.push_back(std::move(job));
  }
  if (jobs.empty()) {
    return usage("nothing to ask");
  }

  asio::io_context io(1);
  auto created = Resolver::create(io, options);
  if (!created) {
    std::fprintf(stderr, "dnsq: %s\n", created.error().c_str());
    return 1;
  }
  std::unique_ptr<Resolver> resolver = std::move(created.value());
  for (Job& job : jobs) {
    asio::co_spawn(io, run_job(resolver.get(), job), asio::detached);
  }
  asio::steady_timer destroy_timer(io);
  if (destroy_after_ms) {
    destroy_timer.expires_after(std::chrono::milliseconds(*destroy_after_ms));
    destroy_timer.async_wait([&resolver](const asio::error_code&) { resolver.reset(); });
  }
  io.run();
  resolver.reset();
  int missing = 0;
  for (const Job& job : jobs) {
    std::printf("query %s %s\n%s", job.type.c_str(), job.name.c_str(),
                job.output.empty() ? "no answer\n" : job.output.c_str());
    missing += job.output.empty() ? 1 : 0;
  }
  return missing == 0 ? 0 : 1;
}
