#include "tls/server_context.hpp"

#include <openssl/err.h>

#include <asio/ssl/context.hpp>

namespace mxgate::tls {

std::string last_error_text() {
  std::string text;
  while (const unsigned long code = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof buf);
    if (!text.empty()) text += "; ";
    text += buf;
  }
  return text.empty() ? "unknown error" : text;
}

Result<std::shared_ptr<asio::ssl::context>> make_server_context(const config::Tls& tls) {
  auto context = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  SSL_CTX* ctx = context->native_handle();
  ERR_clear_error();

  const int min_version = tls.min_version == "TLSv1.3" ? TLS1_3_VERSION : TLS1_2_VERSION;
  if (SSL_CTX_set_min_proto_version(ctx, min_version) != 1)
    return make_error("tls.min_version: " + last_error_text());
  SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION |
                               SSL_OP_NO_RENEGOTIATION);
  // Idle TLS sessions give OpenSSL's record buffers back; tls::Stream keeps
  // no buffers of its own, so an idle connection holds little beyond the SSL.
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  // With read-ahead (tls::Stream), one recv(2) takes as many records as fit
  // in the read buffer: room for three full records instead of one cuts the
  // recv calls for a large message by three.  Released when idle, like the
  // default one.  Three, not four: glibc consolidates its whole heap on every
  // free(3) of 64 KiB or more, and this buffer is freed at every idle moment.
  SSL_CTX_set_default_read_buffer_len(ctx, 3 * (SSL3_RT_MAX_PLAIN_LENGTH + SSL3_RT_MAX_ENCRYPTED_OVERHEAD));
  // The chain sent is the one in the certificate file.  Without this,
  // OpenSSL tries to build a chain for a certificate file without
  // intermediates on every handshake (X509_verify_cert against the context's
  // store, which holds nothing here: a server context loads no CAs), a
  // measurable share of a full handshake's CPU for the same result.
  SSL_CTX_set_mode(ctx, SSL_MODE_NO_AUTO_CHAIN);
  if (SSL_CTX_set_cipher_list(ctx, tls.ciphers.c_str()) != 1)
    return make_error("tls.ciphers: " + last_error_text());
  if (SSL_CTX_set_ciphersuites(ctx, tls.ciphersuites.c_str()) != 1)
    return make_error("tls.ciphersuites: " + last_error_text());
  if (SSL_CTX_set1_groups_list(ctx, tls.groups.c_str()) != 1)
    return make_error("tls.groups: " + last_error_text());
  SSL_CTX_set_dh_auto(ctx, 1);

  for (std::size_t i = 0; i < tls.certificates.size(); ++i) {
    const auto& pair = tls.certificates[i];
    const std::string key = "tls.certificates[" + std::to_string(i) + "]";
    if (SSL_CTX_use_certificate_chain_file(ctx, pair.cert.c_str()) != 1)
      return make_error(key + ".cert: " + pair.cert.string() + ": " + last_error_text());
    if (SSL_CTX_use_PrivateKey_file(ctx, pair.key.c_str(), SSL_FILETYPE_PEM) != 1)
      return make_error(key + ".key: " + pair.key.string() + ": " + last_error_text());
    if (SSL_CTX_check_private_key(ctx) != 1)
      return make_error(key + ".key: does not match " + pair.cert.string() + ": " + last_error_text());
  }

  static constexpr unsigned char kSessionContext[] = "mxgate-smtp";
  SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof kSessionContext - 1);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
  SSL_CTX_sess_set_cache_size(ctx, 20480);
  SSL_CTX_set_timeout(ctx, 3600);
  SSL_CTX_set_num_tickets(ctx, 1);  // one SMTP session at a time per ticket is plenty
  return context;
}

smtp::TlsInfo describe(const SSL* ssl) {
  smtp::TlsInfo info;
  info.version = SSL_get_version(ssl);
  if (const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl)) {
    info.cipher = SSL_CIPHER_get_name(cipher);
    info.bits = SSL_CIPHER_get_bits(cipher, &info.alg_bits);
  }
  return info;
}

}  // namespace mxgate::tls
