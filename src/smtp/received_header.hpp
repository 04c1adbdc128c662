// The trace header this hop prepends: RFC 5321 section 4.4 (Received), with
// protocol names from RFC 3848 (SMTP, ESMTP, ESMTPS) and RFC 6531 section
// 3.7.3 (UTF8SMTP, UTF8SMTPS), and the TLS parameters in a comment as
// Postfix writes them, so a reader sees how every hop was protected.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

namespace mxgate::smtp {

struct TlsInfo {
  std::string version;  // "TLSv1.3"
  std::string cipher;   // "TLS_AES_256_GCM_SHA384"
  int bits = 0;         // secret bits in use
  int alg_bits = 0;     // bits the algorithm supports
};

struct ReceivedFields {
  std::string_view helo;        // the client's EHLO/HELO argument
  std::string_view client_ip;   // "127.0.0.1" or "::1"
  std::string_view hostname;    // ours
  std::string_view protocol;    // from protocol_name()
  std::string_view queue_id;
  const TlsInfo* tls = nullptr;     // null for cleartext
  std::string_view recipient;       // named only when the message has exactly one
  std::chrono::system_clock::time_point when;
};

std::string_view protocol_name(bool ehlo, bool tls, bool smtputf8);

// "Received: ...\r\n" with folded continuation lines.
std::string received_header(const ReceivedFields& fields);

// RFC 5322 section 3.3 date-time in UTC, independent of the process locale.
std::string rfc5322_date(std::chrono::system_clock::time_point when);

}  // namespace mxgate::smtp
