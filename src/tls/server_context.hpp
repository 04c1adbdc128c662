// The server-side TLS context for STARTTLS (RFC 3207) and implicit TLS
// (RFC 8314 section 3.3), on OpenSSL 3.  Policy: TLS 1.2 and 1.3, server
// cipher preference with ECDHE+AEAD first (Mozilla "intermediate", strongest
// first) and legacy ECDHE+CBC last so that opportunistic peers still get
// encryption (RFC 7435), groups X25519/P-256/P-384, ECDSA and RSA
// certificates side by side (OpenSSL picks per the client's signature
// algorithms), session resumption by cache and tickets, no compression, no
// renegotiation.
#pragma once

#include <openssl/ssl.h>

#include <memory>

#include "config/config.hpp"
#include "smtp/received_header.hpp"
#include "util/result.hpp"

namespace asio::ssl {
class context;
}

namespace mxgate::tls {

// Builds the context and loads every certificate pair; errors name the
// offending key (tls.certificates[N].cert ...) and carry OpenSSL's reason.
Result<std::shared_ptr<asio::ssl::context>> make_server_context(const config::Tls& tls);

// Version, cipher and key bits of an established connection.
smtp::TlsInfo describe(const SSL* ssl);

// OpenSSL's error queue as one line (and cleared), for logs.
std::string last_error_text();

}  // namespace mxgate::tls
