// tlshandshake: what OpenSSL alone costs the server for one full TLS
// handshake, measured with mxgate's own server context and no network (the
// reference for bench/run's scenario f; issue 4).
//
// Contract
// - tlshandshake --cert FILE --key FILE [--cert FILE --key FILE]...
//                [--seconds S (3)] [--json]
//   Builds the server context with tls::make_server_context and mxgate's
//   default [tls] settings (protocols, cipher lists, groups, session cache and
//   tickets, exactly as `mxgate serve` does), and a client context like
//   smtpload's (TLS 1.2 or later, OpenSSL's default groups and suites, no
//   certificate checks, no resumption).  Then, for S seconds of the server's
//   CPU, runs full handshakes between a fresh server SSL and a fresh client
//   SSL over an in-memory BIO pair, in one thread, and prints
//     handshakes N  server_cpu_s X  server_ms_per_handshake Y
//     handshakes_per_cpu_s Z  protocol P  cipher C  server_key K
//   (one JSON object with --json).
// - Only the server's side is timed: SSL_new, every SSL_do_handshake call of
//   the server (ClientHello to its NewSessionTicket) and SSL_free, each
//   bracketed by the thread's CPU clock; the client's calls are not counted.
//   That is the whole of OpenSSL's work for a server handshake, with no
//   socket, no event loop and no SMTP: what mxgate's cost per handshake in
//   scenario f is compared with.
// - Exit status 0; 1 when a context cannot be built or a handshake fails;
//   2 on a usage error.
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <time.h>

#include <asio/ssl/context.hpp>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "config/config.hpp"
#include "tls/server_context.hpp"
#include "tls/stream.hpp"

namespace {

using mxgate::tls::UniqueSsl;

struct Options {
  mxgate::config::Tls tls;
  double seconds = 3;
  bool json = false;
};

int usage(const char* why) {
  std::fprintf(stderr,
               "tlshandshake: %s\nusage: tlshandshake --cert FILE --key FILE [--cert FILE --key FILE]... "
               "[--seconds S] [--json]\n",
               why);
  return 2;
}

double thread_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

struct CtxFree {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};

std::unique_ptr<SSL_CTX, CtxFree> make_client_context() {
  std::unique_ptr<SSL_CTX, CtxFree> ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) return ctx;
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
  return ctx;
}

// Handshake progress of one side: done, still going, or failed.
enum class Side { done, going, failed };

Side step(SSL* ssl) {
  const int r = SSL_do_handshake(ssl);
  if (r == 1) return Side::done;
  const int err = SSL_get_error(ssl, r);
  return err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE ? Side::going : Side::failed;
}

struct Outcome {
  bool ok = false;
  double server_cpu_s = 0;
  std::string protocol, cipher, key;
};

// One full handshake; only the server's calls are on the clock.
Outcome handshake(SSL_CTX* server_ctx, SSL_CTX* client_ctx) {
  Outcome out;
  BIO* server_bio = nullptr;
  BIO* client_bio = nullptr;
  if (BIO_new_bio_pair(&server_bio, 0, &client_bio, 0) != 1) return out;

  double t0 = thread_cpu_s();
  UniqueSsl server(SSL_new(server_ctx));
  out.server_cpu_s += thread_cpu_s() - t0;
  UniqueSsl client(SSL_new(client_ctx));
  if (!server || !client) {
    BIO_free(server_bio);
    BIO_free(client_bio);
    return out;
  }
  SSL_set_bio(server.get(), server_bio, server_bio);
  SSL_set_bio(client.get(), client_bio, client_bio);
  SSL_set_accept_state(server.get());
  SSL_set_connect_state(client.get());

  Side c = Side::going;
  Side s = Side::going;
  // The client speaks first; after that each side runs until it waits for
  // the other.  The server is done once its NewSessionTicket is written.
  for (int rounds = 0; rounds < 20 && (c == Side::going || s == Side::going); ++rounds) {
    if (c == Side::going) c = step(client.get());
    if (s == Side::going) {
      t0 = thread_cpu_s();
      s = step(server.get());
      out.server_cpu_s += thread_cpu_s() - t0;
    }
    if (c == Side::failed || s == Side::failed) return out;
  }
  // The client reads the ticket, as smtpload would with its first read.
  char byte;
  SSL_read(client.get(), &byte, 1);
  ERR_clear_error();
  if (c != Side::done || s != Side::done) return out;

  out.ok = true;
  out.protocol = SSL_get_version(server.get());
  out.cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(server.get()));
  if (EVP_PKEY* key = SSL_get_privatekey(server.get())) {
    out.key = std::string(EVP_PKEY_get0_type_name(key)) + "-" + std::to_string(EVP_PKEY_get_bits(key));
  }
  client.reset();
  t0 = thread_cpu_s();
  server.reset();
  out.server_cpu_s += thread_cpu_s() - t0;
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--json") {
      options.json = true;
    } else if (arg == "--cert" && has_value) {
      options.tls.certificates.push_back({argv[++i], {}});
    } else if (arg == "--key" && has_value) {
      if (options.tls.certificates.empty() || !options.tls.certificates.back().key.empty())
        return usage("--key must follow its --cert");
      options.tls.certificates.back().key = argv[++i];
    } else if (arg == "--seconds" && has_value) {
      const std::string_view v = argv[++i];
      const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), options.seconds);
      if (ec != std::errc() || end != v.data() + v.size() || !(options.seconds > 0))
        return usage("--seconds: a positive number");
    } else {
      return usage(("unknown or incomplete option " + std::string(arg)).c_str());
    }
  }
  if (options.tls.certificates.empty()) return usage("at least one --cert/--key pair");
  for (const auto& pair : options.tls.certificates)
    if (pair.key.empty()) return usage("every --cert needs its --key");

  auto server = mxgate::tls::make_server_context(options.tls);
  if (!server) {
    std::fprintf(stderr, "tlshandshake: %s\n", server.error().c_str());
    return 1;
  }
  auto client = make_client_context();
  if (!client) {
    std::fprintf(stderr, "tlshandshake: cannot make the client context\n");
    return 1;
  }
  SSL_CTX* server_ctx = (*server)->native_handle();

  // One handshake not counted: OpenSSL fetches and caches its algorithms on
  // first use, which a running server has long done.
  Outcome last = handshake(server_ctx, client.get());
  long handshakes = 0;
  double server_cpu_s = 0;
  while (last.ok && server_cpu_s < options.seconds) {
    last = handshake(server_ctx, client.get());
    server_cpu_s += last.server_cpu_s;
    ++handshakes;
  }
  if (!last.ok) {
    std::fprintf(stderr, "tlshandshake: handshake failed: %s\n", mxgate::tls::last_error_text().c_str());
    return 1;
  }
  const double ms = server_cpu_s * 1e3 / static_cast<double>(handshakes);
  const double rate = static_cast<double>(handshakes) / server_cpu_s;
  if (options.json) {
    std::printf(
        "{\"handshakes\":%ld,\"server_cpu_s\":%.4f,\"server_ms_per_handshake\":%.4f,"
        "\"handshakes_per_cpu_s\":%.1f,\"protocol\":\"%s\",\"cipher\":\"%s\",\"server_key\":\"%s\"}\n",
        handshakes, server_cpu_s, ms, rate, last.protocol.c_str(), last.cipher.c_str(), last.key.c_str());
  } else {
    std::printf(
        "handshakes %ld  server_cpu_s %.3f  server_ms_per_handshake %.4f  handshakes_per_cpu_s %.0f  "
        "protocol %s  cipher %s  server_key %s\n",
        handshakes, server_cpu_s, ms, rate, last.protocol.c_str(), last.cipher.c_str(), last.key.c_str());
  }
  return 0;
}
