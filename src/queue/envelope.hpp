// The SMTP envelope of one accepted message (RFC 5321 section 2.3.1) plus the
// facts about its arrival that later stages report (client, TLS).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mxgate::queue {

struct Envelope {
  std::string id;                       // queue ID, [0-9A-Z]+
  std::string sender;                   // reverse-path without <>; empty for the null sender
  std::vector<std::string> recipients;  // forward-paths without <>
  bool smtputf8 = false;                // MAIL ... SMTPUTF8 (RFC 6531)
  bool body_8bitmime = false;           // MAIL ... BODY=8BITMIME (RFC 6152)
  std::string client_address;           // peer IP
  std::string helo;                     // EHLO/HELO argument
  std::string tls;                      // "TLSv1.3 TLS_AES_256_GCM_SHA384" or "" for cleartext
  std::int64_t received_unix = 0;       // seconds since the epoch
};

}  // namespace mxgate::queue
