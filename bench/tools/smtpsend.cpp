// smtpsend: one delivery attempt with mxgate's outbound SMTP client, for the
// black-box tests (tests/integration/test_smtp_client.py).
//
// Contract
// - Builds the TLS requirement with delivery::decide_tls() as if the MX
//   RRset and the TLSA RRset (the --tlsa records, or NODATA without any)
//   were DNSSEC-secure, then calls delivery::deliver_over_smtp() once.
// - Prints the AttemptResult as one JSON object on stdout:
//     {"connection_failed": bool, "error": str, "tls_summary": str,
//      "recipients": [{"recipient": str, "code": int, "reply": str}, ...]}
//   or, when the policy defers, {"deferred": true, "reason": str}.
// - Exit status: 0 when the attempt completed (whatever the per-recipient
//   results), 1 when the connection failed or the policy deferred, 2 on a
//   usage error.
// - Only loopback servers (127.0.0.0/8, ::1): it is a test tool.
//
// Usage
//   smtpsend --server 127.0.0.1:PORT --tls none|may|encrypt|verify|dane|dane-only
//            [--host NAME] [--tlsa "U S M HEX"]... --from ADDR --to ADDR [--to ADDR]...
//            --file MESSAGE [--smtputf8] [--8bitmime] [--helo NAME] [--timeout SECONDS]
//   --from "" is the null sender.  MESSAGE is sent as is (CRLF line ends).
#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <charconv>
#include <cstdio>
#include <exception>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "delivery/smtp_client.hpp"
#include "delivery/tls_policy.hpp"
#include "util/result.hpp"

namespace {

using mxgate::make_error;
using mxgate::Result;
namespace delivery = mxgate::delivery;
namespace dns = mxgate::dns;

constexpr std::string_view kUsage =
    "usage: smtpsend --server HOST:PORT --tls none|may|encrypt|verify|dane|dane-only [--host NAME]\n"
    "                [--tlsa \"USAGE SELECTOR MTYPE HEX\"]... --from ADDR --to ADDR [--to ADDR]...\n"
    "                --file MESSAGE [--smtputf8] [--8bitmime] [--helo NAME] [--timeout SECONDS]\n";

struct Options {
  asio::ip::tcp::endpoint server;
  delivery::TlsLevel level = delivery::TlsLevel::may;
  std::string host;
  std::vector<dns::TlsaRecord> tlsa;
  std::string from;
  std::vector<std::string> to;
  std::string file;
  bool smtputf8 = false;
  bool body_8bitmime = false;
  std::string helo = "smtpsend.example.test";
  unsigned timeout = 30;
};

Result<asio::ip::tcp::endpoint> parse_server(std::string_view text) {
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return make_error("--server: expected [IPV6]:PORT");
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return make_error("--server: expected HOST:PORT");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  unsigned port_number = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), port_number);
  if (ec != std::errc{} || end != port.data() + port.size() || port_number == 0 || port_number > 65535)
    return make_error("--server: bad port");
  asio::error_code aec;
  const auto address = asio::ip::make_address(std::string(host), aec);
  if (aec) return make_error("--server: not a numeric address");
  const bool loopback = address.is_v4() ? (address.to_v4().to_uint() >> 24) == 127 : address.is_loopback();
  if (!loopback) return make_error("--server: only loopback addresses (this is a test tool)");
  return asio::ip::tcp::endpoint(address, static_cast<unsigned short>(port_number));
}

Result<dns::TlsaRecord> parse_tlsa(std::string_view text) {
  std::istringstream in{std::string(text)};
  unsigned usage = 0;
  unsigned selector = 0;
  unsigned mtype = 0;
  std::string hex;
  if (!(in >> usage >> selector >> mtype >> hex) || usage > 255 || selector > 255 || mtype > 255 ||
      hex.size() % 2 != 0)
    return make_error("--tlsa: expected \"USAGE SELECTOR MTYPE HEX\"");
  dns::TlsaRecord r;
  r.usage = static_cast<std::uint8_t>(usage);
  r.selector = static_cast<std::uint8_t>(selector);
  r.matching_type = static_cast<std::uint8_t>(mtype);
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    unsigned byte = 0;
    const auto [end, ec] = std::from_chars(hex.data() + i, hex.data() + i + 2, byte, 16);
    if (ec != std::errc{} || end != hex.data() + i + 2) return make_error("--tlsa: bad hex");
    r.data.push_back(static_cast<std::uint8_t>(byte));
  }
  return r;
}

Result<Options> parse_options(int argc, char** argv) {
  Options o;
  bool have_server = false;
  bool have_from = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (flag == "--smtputf8") {
      o.smtputf8 = true;
      continue;
    }
    if (flag == "--8bitmime") {
      o.body_8bitmime = true;
      continue;
    }
    if (i + 1 >= argc) return make_error(std::string(flag) + ": missing value or unknown option");
    const std::string_view value = argv[++i];
    if (flag == "--server") {
      auto server = parse_server(value);
      if (!server) return make_error(server.error());
      o.server = *server;
      have_server = true;
    } else if (flag == "--tls") {
      if (!delivery::parse_tls_level(value, o.level)) return make_error("--tls: unknown level");
    } else if (flag == "--host") {
      o.host = value;
    } else if (flag == "--tlsa") {
      auto record = parse_tlsa(value);
      if (!record) return make_error(record.error());
      o.tlsa.push_back(std::move(*record));
    } else if (flag == "--from") {
      o.from = value;
      have_from = true;
    } else if (flag == "--to") {
      o.to.emplace_back(value);
    } else if (flag == "--file") {
      o.file = value;
    } else if (flag == "--helo") {
      o.helo = value;
    } else if (flag == "--timeout") {
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), o.timeout);
      if (ec != std::errc{} || end != value.data() + value.size() || o.timeout == 0)
        return make_error("--timeout: expected seconds");
    } else {
      return make_error("unknown option " + std::string(flag));
    }
  }
  if (!have_server) return make_error("--server is required");
  if (!have_from) return make_error("--from is required");
  if (o.to.empty()) return make_error("--to is required");
  if (o.file.empty()) return make_error("--file is required");
  return o;
}

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string to_json(const delivery::AttemptResult& r) {
  std::string out = "{\"connection_failed\": ";
  out += r.connection_failed ? "true" : "false";
  out += ", \"error\": " + json_string(r.error);
  out += ", \"tls_summary\": " + json_string(r.tls_summary);
  out += ", \"recipients\": [";
  for (std::size_t i = 0; i < r.recipients.size(); ++i) {
    if (i > 0) out += ", ";
    out += "{\"recipient\": " + json_string(r.recipients[i].recipient) +
           ", \"code\": " + std::to_string(r.recipients[i].code) +
           ", \"reply\": " + json_string(r.recipients[i].reply) + "}";
  }
  return out + "]}";
}

}  // namespace

int main(int argc, char** argv) {
  auto options = parse_options(argc, argv);
  if (!options) {
    std::cerr << "smtpsend: " << options.error() << "\n" << kUsage;
    return 2;
  }
  const Options& o = *options;
  std::ifstream file(o.file, std::ios::binary);
  if (!file) {
    std::cerr << "smtpsend: cannot read " << o.file << "\n";
    return 2;
  }
  const std::string content((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());

  dns::Answer<dns::TlsaRecord> tlsa;
  tlsa.security = dns::Security::secure;
  tlsa.status = o.tlsa.empty() ? dns::Status::nodata : dns::Status::ok;
  tlsa.records = o.tlsa;
  const delivery::TlsDecision decision = delivery::decide_tls(o.level, dns::Security::secure, o.host, &tlsa);
  if (decision.defer) {
    std::cout << "{\"deferred\": true, \"reason\": " << json_string(decision.reason) << "}\n";
    return 1;
  }

  mxgate::queue::Envelope envelope;
  envelope.id = "SMTPSEND";
  envelope.sender = o.from;
  envelope.recipients = o.to;
  envelope.smtputf8 = o.smtputf8;
  envelope.body_8bitmime = o.body_8bitmime;

  delivery::ClientSettings settings;
  settings.helo_name = o.helo;
  const std::chrono::seconds timeout{o.timeout};
  settings.connect_timeout = settings.greeting_timeout = settings.command_timeout = timeout;
  settings.data_init_timeout = settings.data_block_timeout = settings.data_end_timeout = timeout;
  settings.tls_handshake_timeout = timeout;

  asio::io_context io;
  std::optional<delivery::AttemptResult> result;
  std::string failure;
  asio::co_spawn(
      io, delivery::deliver_over_smtp(o.server, settings, decision.requirement, envelope, content, o.to),
      [&](std::exception_ptr e, delivery::AttemptResult r) {
        if (e) {
          try {
            std::rethrow_exception(e);
          } catch (const std::exception& ex) {
            failure = ex.what();
          }
          return;
        }
        result = std::move(r);
      });
  io.run();
  if (!result) {
    std::cerr << "smtpsend: delivery coroutine failed: " << failure << "\n";
    return 1;
  }
  std::cout << to_json(*result) << "\n";
  return result->connection_failed ? 1 : 0;
}
