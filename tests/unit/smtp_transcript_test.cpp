// Golden SMTP transcripts (after Postfix's smtpd_check.in/.ref): each file in
// tests/unit/data/transcripts/ is a conversation anyone can read without
// reading C++.  Every file is replayed twice: with each run of client lines
// handed to the session in one receive(), and byte by byte.  Both must
// produce exactly the server lines written in the file.
//
// Format, one item per line:
//   # ...              comment; blank lines are ignored too
//   !config k=v ...    first, optional: tls=none|may|encrypt|implicit,
//                      max_message_size=, max_recipients=, max_command_line=,
//                      max_errors=, hostname=, client=
//   C: text            client sends text + CRLF
//   C+: text           client sends text with no CRLF added
//   S: text            the server's next output line is text (+ CRLF)
//   M: text / M+: text the stored message content continues with text (+ CRLF / without);
//                      checked at the next !store
//   E: field=value     the envelope of the message the last !store answered: id, sender,
//                      recipients (comma-separated), smtputf8, body_8bitmime
//                      (0/1), helo, client, tls, received_unix
//   !store ok|fail     the session asked to store; answer stored(true|false)
//   !tls               the session asked for a handshake; call tls_established()
//   !timeout           the read deadline passed; the reply is the next S: line(s)
//   !shutdown          the server is stopping; likewise
//   !close             the session has asked to close the connection
//   !read              the session is waiting for more input
//   !skip reason       skip this transcript (for a known server bug)
//
// Escapes in text: \r \n \t \\ and \xHH; "\x20" for a trailing space.
// Client lines are grouped: a run of C:/C+: lines is delivered together when
// the next non-C line is reached.  Before each group and each directive,
// every byte the server has written must already be matched by S: lines.
//
// The clock is fixed at Thu, 29 Feb 2024 13:05:09 +0000, queue IDs run
// Q0000001, Q0000002, ..., the client is 192.0.2.7, the hostname
// mx.example.test, and TLS is TLSv1.3 TLS_AES_256_GCM_SHA384 (256/256 bits).
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "fixed_session_environment.hpp"
#include "smtp/session.hpp"

namespace mxgate::smtp {
namespace {

const std::filesystem::path kTranscriptDir = std::filesystem::path(MXGATE_TEST_DATA) / "transcripts";

using test_support::FixedEnvironment;

// Decodes the escapes; false on a malformed escape.
bool unescape(std::string_view text, std::string& out) {
  out.clear();
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\\') {
      out += text[i];
      continue;
    }
    if (++i == text.size()) return false;
    switch (text[i]) {
      case 'r':
        out += '\r';
        break;
      case 'n':
        out += '\n';
        break;
      case 't':
        out += '\t';
        break;
      case '\\':
        out += '\\';
        break;
      case 'x': {
        if (i + 2 >= text.size()) return false;
        const auto hex = [](char c) -> int {
          if (c >= '0' && c <= '9') return c - '0';
          if (c >= 'a' && c <= 'f') return c - 'a' + 10;
          if (c >= 'A' && c <= 'F') return c - 'A' + 10;
          return -1;
        };
        const int hi = hex(text[i + 1]);
        const int lo = hex(text[i + 2]);
        if (hi < 0 || lo < 0) return false;
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
        break;
      }
      default:
        return false;
    }
  }
  return true;
}

std::string printable(std::string_view s) { return testing::PrintToString(std::string(s)); }

struct Line {
  int number = 0;
  std::string kind;  // "C", "C+", "S", "M", "M+", "E", or a directive such as "!store"
  std::string text;  // raw (escaped) argument
};

bool parse_file(const std::filesystem::path& file, std::vector<Line>& lines, std::string& error) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    error = "cannot open " + file.string();
    return false;
  }
  std::string raw;
  int number = 0;
  while (std::getline(in, raw)) {
    ++number;
    if (!raw.empty() && raw.back() == '\r') {
      error = file.filename().string() + ":" + std::to_string(number) + ": CRLF in transcript file";
      return false;
    }
    if (raw.empty() || raw[0] == '#') continue;
    Line line;
    line.number = number;
    if (raw[0] == '!') {
      const auto space = raw.find(' ');
      line.kind = raw.substr(0, space);
      line.text = space == std::string::npos ? "" : raw.substr(space + 1);
    } else {
      const auto colon = raw.find(':');
      if (colon == std::string::npos) {
        error = file.filename().string() + ":" + std::to_string(number) + ": no ':' in " + raw;
        return false;
      }
      line.kind = raw.substr(0, colon);
      line.text = raw.substr(colon + 1);
      if (!line.text.empty() && line.text[0] == ' ') line.text.erase(0, 1);
    }
    static const char* kKinds[] = {"C",      "C+",   "S",        "M",         "M+",     "E",     "!config",
                                   "!store", "!tls", "!timeout", "!shutdown", "!close", "!read", "!skip"};
    if (std::find_if(std::begin(kKinds), std::end(kKinds), [&](const char* k) { return line.kind == k; }) ==
        std::end(kKinds)) {
      error = file.filename().string() + ":" + std::to_string(number) + ": unknown item " + line.kind;
      return false;
    }
    lines.push_back(std::move(line));
  }
  return true;
}

enum class Delivery { whole, bytewise };

void PrintTo(Delivery d, std::ostream* os) { *os << (d == Delivery::whole ? "whole" : "bytewise"); }

// Replays one transcript; failures are reported with file:line.
class Replay {
 public:
  Replay(std::string name, Delivery delivery) : name_(std::move(name)), delivery_(delivery) {}

  void run(const std::vector<Line>& lines) {
    std::size_t first = 0;
    SessionSettings settings{"mx.example.test", config::TlsMode::none, {}};
    std::string client = "192.0.2.7";
    if (!lines.empty() && lines[0].kind == "!config") {
      configure(lines[0], settings, client);
      first = 1;
    }
    session_.emplace(settings, env_, client);
    if (settings.tls_mode == config::TlsMode::implicit) session_->tls_established(tls_info());
    actual_ = session_->greeting();

    for (std::size_t i = first; i < lines.size(); ++i) {
      const Line& line = lines[i];
      at_ = name_ + ":" + std::to_string(line.number);
      std::string bytes;
      if (line.kind != "!config" && line.kind != "!skip" && !unescape(line.text, bytes)) {
        ADD_FAILURE() << at_ << ": bad escape in " << line.text;
        return;
      }
      if (line.kind == "C" || line.kind == "C+") {
        if (pending_.empty()) {
          if (!all_matched()) return;
        }
        pending_ += bytes;
        if (line.kind == "C") pending_ += "\r\n";
        continue;
      }
      flush();
      if (line.kind == "S") {
        if (!match(bytes + "\r\n")) return;
      } else if (line.kind == "M") {
        expected_message_ += bytes + "\r\n";
        have_expected_message_ = true;
      } else if (line.kind == "M+") {
        expected_message_ += bytes;
        have_expected_message_ = true;
      } else if (line.kind == "E") {
        if (!check_envelope(line.text)) return;
      } else if (!directive(line)) {
        return;
      }
    }
    flush();
    at_ = name_ + ":end";
    all_matched();
    EXPECT_FALSE(have_expected_message_) << at_ << ": M: lines with no !store after them";
  }

 private:
  static TlsInfo tls_info() { return TlsInfo{"TLSv1.3", "TLS_AES_256_GCM_SHA384", 256, 256}; }

  void configure(const Line& line, SessionSettings& settings, std::string& client) {
    std::istringstream words(line.text);
    std::string word;
    while (words >> word) {
      const auto eq = word.find('=');
      const std::string key = word.substr(0, eq);
      const std::string value = eq == std::string::npos ? "" : word.substr(eq + 1);
      if (key == "tls") {
        if (value == "none")
          settings.tls_mode = config::TlsMode::none;
        else if (value == "may")
          settings.tls_mode = config::TlsMode::may;
        else if (value == "encrypt")
          settings.tls_mode = config::TlsMode::encrypt;
        else if (value == "implicit")
          settings.tls_mode = config::TlsMode::implicit;
        else
          ADD_FAILURE() << name_ << ":" << line.number << ": bad tls mode " << value;
      } else if (key == "max_message_size") {
        settings.limits.max_message_size = std::stoull(value);
      } else if (key == "max_recipients") {
        settings.limits.max_recipients = std::stoul(value);
      } else if (key == "max_command_line") {
        settings.limits.max_command_line = std::stoul(value);
      } else if (key == "max_errors") {
        settings.limits.max_errors = static_cast<unsigned>(std::stoul(value));
      } else if (key == "hostname") {
        settings.hostname = value;
      } else if (key == "client") {
        client = value;
      } else {
        ADD_FAILURE() << name_ << ":" << line.number << ": unknown config key " << key;
      }
    }
  }

  // Everything the server wrote so far is matched by S: lines.
  bool all_matched() {
    if (cursor_ == actual_.size()) return true;
    ADD_FAILURE() << at_ << ": unexpected server output " << printable(actual_.substr(cursor_));
    cursor_ = actual_.size();
    return false;
  }

  bool match(const std::string& expected) {
    const std::string_view rest = std::string_view(actual_).substr(cursor_);
    if (rest.substr(0, expected.size()) == expected) {
      cursor_ += expected.size();
      return true;
    }
    ADD_FAILURE() << at_ << ": expected server line " << printable(expected) << "\n  but the server wrote "
                  << printable(rest);
    return false;
  }

  void pump() {
    for (;;) {
      Step step = session_->advance();
      actual_ += step.output;
      last_ = step.next;
      switch (step.next) {
        case Next::read:
          return;
        case Next::store:
          awaiting_store_ = true;
          stored_content_ = session_->content();
          envelope_ = session_->envelope();
          return;
        case Next::start_tls:
          awaiting_tls_ = true;
          return;
        case Next::close:
          closed_ = true;
          return;
      }
    }
  }

  bool blocked() const { return awaiting_store_ || awaiting_tls_ || closed_; }

  void deliver(std::string bytes) {
    if (delivery_ == Delivery::whole) {
      if (blocked()) {
        held_ += bytes;
        return;
      }
      session_->receive(bytes);
      pump();
      return;
    }
    for (std::size_t i = 0; i < bytes.size(); ++i) {
      if (blocked()) {
        held_ += bytes.substr(i);
        return;
      }
      session_->receive(std::string_view(bytes).substr(i, 1));
      pump();
    }
  }

  void flush() {
    if (pending_.empty()) return;
    std::string bytes;
    bytes.swap(pending_);
    deliver(std::move(bytes));
  }

  bool directive(const Line& line) {
    if (line.kind == "!skip") return true;  // handled before the replay
    if (line.kind == "!config") {
      ADD_FAILURE() << at_ << ": !config must come first";
      return false;
    }
    if (line.kind == "!close" || line.kind == "!read") {
      const Next want = line.kind == "!close" ? Next::close : Next::read;
      if (last_ != want || blocked() != (want == Next::close)) {
        ADD_FAILURE() << at_ << ": session is not in the state " << line.kind;
        return false;
      }
      return true;
    }
    if (!all_matched()) return false;
    if (line.kind == "!store") {
      if (line.text != "ok" && line.text != "fail") {
        ADD_FAILURE() << at_ << ": !store ok or !store fail";
        return false;
      }
      if (!awaiting_store_) {
        ADD_FAILURE() << at_ << ": the session did not ask to store";
        return false;
      }
      if (have_expected_message_) {
        EXPECT_EQ(printable(stored_content_), printable(expected_message_)) << at_ << ": stored content";
        expected_message_.clear();
        have_expected_message_ = false;
      }
      awaiting_store_ = false;
      stored_envelope_ = envelope_;
      session_->stored(line.text == "ok");
      pump();
      resume();
      return true;
    }
    if (line.kind == "!tls") {
      if (!awaiting_tls_) {
        ADD_FAILURE() << at_ << ": the session did not ask for a TLS handshake";
        return false;
      }
      awaiting_tls_ = false;
      held_.clear();  // cleartext bytes behind STARTTLS never reach the TLS session
      session_->tls_established(tls_info());
      pump();
      return true;
    }
    if (line.kind == "!timeout") {
      actual_ += session_->timed_out();
      pump();
      return true;
    }
    if (line.kind == "!shutdown") {
      actual_ += session_->shutting_down();
      pump();
      return true;
    }
    ADD_FAILURE() << at_ << ": unhandled directive " << line.kind;
    return false;
  }

  // Bytes that arrived while the session waited for a store are read after it.
  void resume() {
    if (held_.empty() || closed_) return;
    std::string bytes;
    bytes.swap(held_);
    deliver(std::move(bytes));
  }

  bool check_envelope(const std::string& text) {
    const auto eq = text.find('=');
    const std::string key = text.substr(0, eq);
    std::string value;
    if (eq == std::string::npos || !unescape(text.substr(eq + 1), value)) {
      ADD_FAILURE() << at_ << ": E: field=value";
      return false;
    }
    const queue::Envelope& e = stored_envelope_;
    std::string got;
    if (key == "id")
      got = e.id;
    else if (key == "sender")
      got = e.sender;
    else if (key == "recipients") {
      for (std::size_t i = 0; i < e.recipients.size(); ++i) got += (i ? "," : "") + e.recipients[i];
    } else if (key == "smtputf8")
      got = e.smtputf8 ? "1" : "0";
    else if (key == "body_8bitmime")
      got = e.body_8bitmime ? "1" : "0";
    else if (key == "helo")
      got = e.helo;
    else if (key == "client")
      got = e.client_address;
    else if (key == "tls")
      got = e.tls;
    else if (key == "received_unix")
      got = std::to_string(e.received_unix);
    else {
      ADD_FAILURE() << at_ << ": unknown envelope field " << key;
      return false;
    }
    EXPECT_EQ(got, value) << at_ << ": envelope " << key;
    return true;
  }

  std::string name_;
  Delivery delivery_;
  std::string at_;
  FixedEnvironment env_;
  std::optional<Session> session_;
  std::string actual_;
  std::size_t cursor_ = 0;
  std::string pending_;
  std::string held_;
  Next last_ = Next::read;
  bool awaiting_store_ = false;
  bool awaiting_tls_ = false;
  bool closed_ = false;
  std::string stored_content_;
  queue::Envelope envelope_;         // of the message the session asked to store
  queue::Envelope stored_envelope_;  // of the message the last !store answered
  std::string expected_message_;
  bool have_expected_message_ = false;
};

std::vector<std::string> transcript_names() {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(kTranscriptDir, ec))
    if (entry.path().extension() == ".txt") names.push_back(entry.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

class TranscriptTest : public testing::TestWithParam<std::tuple<std::string, Delivery>> {};

TEST_P(TranscriptTest, Replays) {
  const auto& [name, delivery] = GetParam();
  std::vector<Line> lines;
  std::string error;
  ASSERT_TRUE(parse_file(kTranscriptDir / (name + ".txt"), lines, error)) << error;
  for (const Line& line : lines)
    if (line.kind == "!skip") GTEST_SKIP() << name << ".txt: " << line.text;
  Replay(name + ".txt", delivery).run(lines);
}

INSTANTIATE_TEST_SUITE_P(Transcripts, TranscriptTest,
                         testing::Combine(testing::ValuesIn(transcript_names()),
                                          testing::Values(Delivery::whole, Delivery::bytewise)),
                         [](const testing::TestParamInfo<TranscriptTest::ParamType>& info) {
                           std::string n = std::get<0>(info.param);
                           for (char& c : n)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n + (std::get<1>(info.param) == Delivery::whole ? "_whole" : "_bytewise");
                         });

TEST(TranscriptFormat, DirectoryHasTranscripts) { EXPECT_GE(transcript_names().size(), 10u); }

TEST(TranscriptFormat, Escapes) {
  std::string out;
  ASSERT_TRUE(unescape("a\\r\\n\\t\\\\\\x00\\x7f\\xFFz", out));
  EXPECT_EQ(out, std::string("a\r\n\t\\\0\x7f\xff"
                             "z",
                             9));
  EXPECT_FALSE(unescape("\\", out));
  EXPECT_FALSE(unescape("\\q", out));
  EXPECT_FALSE(unescape("\\x4", out));
  EXPECT_FALSE(unescape("\\xg0", out));
}

}  // namespace
}  // namespace mxgate::smtp
