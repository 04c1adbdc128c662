// libFuzzer entry point for the SMTP session state machine (src/smtp/session.hpp).
// Not built by CMake.  Build and run from the repository root:
//
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
//       -Isrc tests/fuzz/session_fuzz.cpp src/smtp/session.cpp src/smtp/address.cpp \
//       src/smtp/message_framing.cpp src/smtp/received_header.cpp src/smtp/reply.cpp src/smtp/relay_policy.cpp \
//       -o /tmp/session_fuzz
//   mkdir -p /tmp/session_corpus && /tmp/session_fuzz -max_total_time=60 /tmp/session_corpus
//
// Add -DSESSION_FUZZ_DIFFERENTIAL to also replay every cleartext input in one
// receive() and require the same replies and stored messages as the split
// feed (the Beast parsegrind property, searched instead of enumerated).
//
// Input: byte 0 picks the TLS mode and limits, byte 1 seeds how the rest is
// cut into receive() calls; the rest is what the client sends.  Besides the
// sanitizers, the session must keep these promises:
//   - output is whole reply lines "ddd SP text CRLF" / "ddd-text CRLF", with
//     continuation lines under one code and no bare CR or LF;
//   - a stored message starts with our Received header, has a sender slot,
//     at least one recipient, no bare CR or LF, and fits max_message_size;
//   - start_tls follows a 220; once closed, the session stays closed and silent.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "smtp/session.hpp"

namespace {

using mxgate::smtp::Next;
using mxgate::smtp::Session;
using mxgate::smtp::SessionEnvironment;
using mxgate::smtp::SessionSettings;
using mxgate::smtp::Step;
using mxgate::smtp::TlsInfo;

[[noreturn]] void fail(const char* what, std::string_view detail) {
  std::fprintf(stderr, "session_fuzz invariant broken: %s\n  %.*s\n", what,
               static_cast<int>(std::min<std::size_t>(detail.size(), 400)), detail.data());
  std::abort();
}

class FixedEnvironment : public SessionEnvironment {
 public:
  std::chrono::system_clock::time_point now() override {
    return std::chrono::system_clock::time_point{std::chrono::seconds{1709211909}};
  }
  std::string new_queue_id() override { return "Q" + std::to_string(++issued_); }

 private:
  unsigned issued_ = 0;
};

bool is_digit(char c) { return c >= '0' && c <= '9'; }

void check_output(std::string_view out) {
  std::string_view continued_code;
  while (!out.empty()) {
    const auto end = out.find("\r\n");
    if (end == std::string_view::npos) fail("output does not end in CRLF", out);
    const auto line = out.substr(0, end);
    if (line.size() < 4 || !is_digit(line[0]) || !is_digit(line[1]) || !is_digit(line[2]) ||
        (line[3] != ' ' && line[3] != '-') || line[0] < '2' || line[0] > '5')
      fail("malformed reply line", line);
    if (line.find_first_of("\r\n") != std::string_view::npos) fail("bare CR or LF in a reply", line);
    if (!continued_code.empty() && line.substr(0, 3) != continued_code)
      fail("continuation line with another code", line);
    continued_code = line[3] == '-' ? line.substr(0, 3) : std::string_view{};
    out.remove_prefix(end + 2);
  }
  if (!continued_code.empty()) fail("multi-line reply without a last line", continued_code);
}

bool has_bare_newline(std::string_view s) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\r' && (i + 1 == s.size() || s[i + 1] != '\n')) return true;
    if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')) return true;
  }
  return false;
}

void check_stored(const Session& session, std::uint64_t max_size) {
  const std::string& content = session.content();
  if (content.rfind("Received: from ", 0) != 0) fail("stored content without Received header", content);
  // The header is its first line plus continuation lines starting with a tab.
  std::size_t header_end = content.find("\r\n") + 2;
  while (header_end < content.size() && content[header_end] == '\t')
    header_end = content.find("\r\n", header_end) + 2;
  if (content.size() - header_end > max_size) fail("stored message over max_message_size", content);
  if (has_bare_newline(content)) fail("stored message with a bare CR or LF", content);
  if (session.envelope().recipients.empty()) fail("stored message without recipients", content);
  if (session.envelope().id.empty()) fail("stored message without queue id", content);
}

struct Outcome {
  std::string output;
  std::vector<std::string> stored;
};

// Feeds the chunks, performing what each Step asks; returns everything written.
Outcome run(const SessionSettings& settings, const std::vector<std::string_view>& chunks,
            bool fail_every_other_store) {
  FixedEnvironment env;
  Session session(settings, env, "192.0.2.7");
  if (settings.tls_mode == mxgate::config::TlsMode::implicit)
    session.tls_established(TlsInfo{"TLSv1.3", "TLS_AES_128_GCM_SHA256", 128, 128});
  Outcome outcome;
  bool closed = false;
  unsigned stores = 0;
  unsigned checks = 0;
  for (const auto chunk : chunks) {
    session.receive(chunk);
    for (bool more = true; more;) {
      Step step = session.advance();
      check_output(step.output);
      outcome.output += step.output;
      if (closed && (!step.output.empty() || step.next != Next::close))
        fail("session spoke after closing", step.output);
      switch (step.next) {
        case Next::read:
          more = false;
          break;
        case Next::store: {
          check_stored(session, settings.limits.max_message_size);
          outcome.stored.push_back(session.content());
          const bool ok = !(fail_every_other_store && (stores++ % 2 == 1));
          const std::size_t before = session.messages_accepted();
          session.stored(ok);
          if (session.messages_accepted() != before + (ok ? 1 : 0)) fail("messages_accepted", "");
          break;
        }
        case Next::start_tls:
          if (!std::string_view(step.output).ends_with("220 2.0.0 Ready to start TLS\r\n"))
            fail("start_tls without 220", step.output);
          session.tls_established(TlsInfo{"TLSv1.3", "TLS_AES_128_GCM_SHA256", 128, 128});
          break;
        case Next::check_recipient: {
          // Every other recipient is refused, as a listed client's would be.
          if (session.recipient_to_check() == nullptr) fail("check_recipient without a recipient", "");
          const bool refuse = checks++ % 2 == 1;
          session.recipient_checked(refuse ? std::optional<mxgate::smtp::Reply>(
                                                 mxgate::smtp::Reply{550, "5.7.1", "Client host blocked"})
                                           : std::nullopt);
          if (session.recipient_to_check() != nullptr) fail("recipient still waiting after its check", "");
          break;
        }
        case Next::close:
          closed = true;
          more = false;
          break;
      }
    }
  }
  if (!closed) {
    const std::string last = session.timed_out();
    check_output(last);
    const Step after = session.advance();
    if (!after.output.empty() || after.next != Next::close)
      fail("not closed after timed_out()", after.output);
  }
  return outcome;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::uint8_t flags = data[0];
  std::uint32_t seed = data[1] * 2654435761u + 1;
  const std::string_view input(reinterpret_cast<const char*>(data + 2), size - 2);

  SessionSettings settings;
  settings.hostname = "mx.example.test";
  settings.tls_mode = static_cast<mxgate::config::TlsMode>(flags & 3);
  if (flags & 4) {
    settings.limits.max_message_size = 64;
    settings.limits.max_recipients = 2;
    settings.limits.max_command_line = 48;
    settings.limits.max_errors = 5;
  }
  const bool fail_every_other_store = flags & 8;
  // The RCPT-stage checks need a client outside relay_networks: with none
  // configured, only loopback may relay, and the fuzzed client is not it.
  static const mxgate::smtp::RelayPolicy policy = [] {
    mxgate::config::Config config;
    config.accept_domains = {"example.net", "example.test"};
    return mxgate::smtp::RelayPolicy::from_config(config).value();
  }();
  if (flags & 32) {
    settings.relay = &policy;
    settings.check_recipients = true;
  }

  std::vector<std::string_view> chunks;
  for (std::size_t pos = 0; pos < input.size();) {
    seed = seed * 1103515245u + 12345u;
    const std::size_t len = (flags & 16) ? 1 : 1 + (seed >> 16) % 64;
    chunks.push_back(input.substr(pos, len));
    pos += len;
  }
  const Outcome split = run(settings, chunks, fail_every_other_store);

#ifdef SESSION_FUZZ_DIFFERENTIAL
  // Bytes behind STARTTLS are dropped only when they arrive with it, so the
  // property holds for cleartext sessions only.
  if (settings.tls_mode == mxgate::config::TlsMode::none) {
    const Outcome whole = run(settings, {input}, fail_every_other_store);
    if (whole.output != split.output)
      fail("split feed changed the replies", whole.output + "\n---\n" + split.output);
    if (whole.stored != split.stored) fail("split feed changed the stored messages", "");
  }
#else
  (void)split;
#endif
  return 0;
}
