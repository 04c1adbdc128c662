// spfq: evaluates SPF (src/sender_auth/spf.hpp, RFC 7208 check_host()) through
// mxgate's DNSSEC-validating resolver (src/dns) and prints the verdict.  A
// test tool: tests/integration/test_spf_oracle.py runs it against the DNS test
// bed (tests/integration/dnsbed.py) and compares it with python3-spf.
//
// usage: spfq [options] IP HELO SENDER     MAIL FROM identity; SENDER "" or
//                                          "<>" is the null sender
//        spfq [options] --helo IP HELO     HELO identity
//   --stub ZONE=ADDR[,ADDR...]   stub zone, ADDR as IP or IP@PORT (repeatable)
//   --ta RR                      trust anchor, a DS or DNSKEY RR (repeatable)
//   --ta-file PATH               trust anchor file (repeatable)
//   --timeout-ms N               per-query timeout (default 30000)
//   --max-lookups N              SpfLimits::max_dns_mechanisms (default 10)
//   --max-void N                 SpfLimits::max_void_lookups (default 2)
//   --max-mx N                   SpfLimits::max_mx_names (default 10)
//   --verbose                    more lines after the verdict (below)
//
// Output: one line "RESULT TEXT": RESULT is none, neutral, pass, fail,
// softfail, temperror or permerror; TEXT the exp= explanation when there is
// one (fail only), else the reason.  With --verbose, then:
//   domain=D  mechanism=M  dns_lookups=N  void_lookups=N  reason=R
//   explanation=E  elapsed_ms=N   (one per line, in this order)
// Exit status: 0 when a verdict was printed (whatever it is), 1 when the
// resolver could not be created, 2 on a usage error.
//
// The option parsing follows dnsq's (bench/tools/dnsq.cpp) so the two tools
// take the same resolver options.
#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dns/resolver.hpp"
#include "resolver_args.hpp"
#include "sender_auth/spf.hpp"

namespace {

using mxgate::sender_auth::SpfLimits;
using mxgate::sender_auth::SpfVerdict;

constexpr std::string_view kUsage =
    "usage: spfq [--stub ZONE=ADDR[,ADDR...]]... [--ta RR]... [--ta-file PATH]... [--timeout-ms N]\n"
    "            [--max-lookups N] [--max-void N] [--max-mx N] [--verbose] IP HELO SENDER\n"
    "       spfq [options] --helo IP HELO\n"
    "SENDER \"\" or \"<>\" is the null sender (checked as postmaster@HELO)\n";


// One line of output must stay one line whatever a TXT record says.
std::string one_line(std::string_view text) {
  std::string out;
  for (char c : text) {
    out += (c == '\n' || c == '\r') ? ' ' : c;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string_view> args(argv + 1, argv + argc);
  mxgate::dns::ResolverOptions options;
  SpfLimits limits;
  bool helo_identity = false;
  bool verbose = false;
  std::vector<std::string> positional;
  auto usage = [](const std::string& why) {
    std::fprintf(stderr, "spfq: %s\n%s", why.c_str(), kUsage.data());
    return 2;
  };
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage.data(), stdout);
      return 0;
    }
    if (arg == "--helo") {
      helo_identity = true;
      continue;
    }
    if (arg == "--verbose") {
      verbose = true;
      continue;
    }
    if (arg == "--") {
      positional.insert(positional.end(), args.begin() + static_cast<std::ptrdiff_t>(i) + 1, args.end());
      break;
    }
    if (!arg.starts_with("--")) {
      positional.emplace_back(arg);
      continue;
    }
    if (i + 1 >= args.size()) {
      return usage(std::string(arg) + " needs a value");
    }
    const std::string_view value = args[++i];
    if (auto applied = mxgate::bench::apply_resolver_arg(arg, value, options)) {
      if (!applied->empty()) {
        return usage(*applied);
      }
    } else if (arg == "--max-lookups" || arg == "--max-void" || arg == "--max-mx") {
      const auto n = mxgate::bench::parse_number(value);
      if (!n || *n > 1000000) {
        return usage(std::string(arg) + " wants a number up to 1000000");
      }
      unsigned& limit = arg == "--max-lookups" ? limits.max_dns_mechanisms
                        : arg == "--max-void"  ? limits.max_void_lookups
                                               : limits.max_mx_names;
      limit = static_cast<unsigned>(*n);
    } else {
      return usage("unknown option " + std::string(arg));
    }
  }
  if (positional.size() != (helo_identity ? 2u : 3u)) {
    return usage(helo_identity ? "--helo wants IP HELO" : "wants IP HELO SENDER");
  }
  asio::error_code ec;
  const auto client = asio::ip::make_address(positional[0], ec);
  if (ec) {
    return usage("\"" + positional[0] + "\" is not an IP address");
  }

  asio::io_context io(1);
  auto created = mxgate::dns::Resolver::create(io, options);
  if (!created) {
    std::fprintf(stderr, "spfq: %s\n", created.error().c_str());
    return 1;
  }
  std::unique_ptr<mxgate::dns::Resolver> resolver = std::move(created.value());
  std::optional<SpfVerdict> verdict;
  std::string failure;
  const auto start = std::chrono::steady_clock::now();
  auto check = helo_identity ? mxgate::sender_auth::check_spf_helo(*resolver, client, positional[1], limits)
                             : mxgate::sender_auth::check_spf_mail_from(*resolver, client, positional[1],
                                                                        positional[2], limits);
  asio::co_spawn(io, std::move(check), [&](std::exception_ptr error, SpfVerdict result) {
    if (error) {
      try {
        std::rethrow_exception(error);
      } catch (const std::exception& e) {
        failure = e.what();
      } catch (...) {
        failure = "unknown exception";
      }
      return;
    }
    verdict = std::move(result);
  });
  io.run();
  const auto elapsed = std::chrono::steady_clock::now() - start;
  resolver.reset();
  if (!verdict) {  // check_spf_* promise not to throw: a bug if we get here
    std::fprintf(stderr, "spfq: no verdict: %s\n", failure.c_str());
    return 1;
  }
  const std::string text = verdict->explanation.empty() ? verdict->reason : verdict->explanation;
  std::printf("%s %s\n", std::string(mxgate::sender_auth::to_string(verdict->result)).c_str(),
              one_line(text).c_str());
  if (verbose) {
    std::printf(
        "domain=%s\nmechanism=%s\ndns_lookups=%u\nvoid_lookups=%u\nreason=%s\nexplanation=%s\n"
        "elapsed_ms=%lld\n",
        verdict->domain.c_str(), one_line(verdict->mechanism).c_str(), verdict->dns_lookups,
        verdict->void_lookups, one_line(verdict->reason).c_str(), one_line(verdict->explanation).c_str(),
        static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count()));
  }
  return 0;
}
