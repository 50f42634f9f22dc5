# nginx as a caching reverse proxy in front of a registry (cache key = URI, so
# blobs by digest are shared; proxy_cache_lock collapses concurrent misses).
# NGINX_LOCK_TIMEOUT / NGINX_LOCK_AGE default to 600s (nginx's own defaults are 5s,
# which lets waiters go upstream themselves after 5 s, uncached).
mirror_start() {
  mkdir -p "$MIRROR_DIR/cache" "$MIRROR_DIR/tmp"
  cat > "$MIRROR_DIR/nginx.conf" <<EOC
$([ "$(id -u)" = 0 ] && echo "user root;")
worker_processes ${NGINX_WORKERS:-auto};
pid $MIRROR_DIR/nginx.pid;
error_log $MIRROR_DIR/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  client_body_temp_path $MIRROR_DIR/tmp/body;
  proxy_temp_path       $MIRROR_DIR/tmp/proxy;
  fastcgi_temp_path     $MIRROR_DIR/tmp/fastcgi;
  uwsgi_temp_path       $MIRROR_DIR/tmp/uwsgi;
  scgi_temp_path        $MIRROR_DIR/tmp/scgi;
  proxy_cache_path $MIRROR_DIR/cache levels=1:2 keys_zone=registry:32m max_size=50g inactive=30d use_temp_path=off;
  upstream registry_upstream {
    server ${UPSTREAM_URL#*://};
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$MIRROR_PORT ${MIRROR_TLS_CERT:+ssl }backlog=4096;
$([ -n "${MIRROR_TLS_CERT:-}" ] && printf '    ssl_certificate %s;\n    ssl_certificate_key %s;\n    ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_session_tickets off;\n' "$MIRROR_TLS_CERT" "$MIRROR_TLS_KEY")
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host \$http_host;
    proxy_read_timeout 600s;
    proxy_buffering on;
    proxy_cache registry;
    proxy_cache_key \$uri;
    proxy_cache_lock on;
    proxy_cache_lock_timeout ${NGINX_LOCK_TIMEOUT:-600s};
    proxy_cache_lock_age ${NGINX_LOCK_AGE:-600s};
    proxy_ignore_headers Cache-Control Expires Set-Cookie;
    add_header X-Cache-Status \$upstream_cache_status always;
    location ~ "^/v2/.+/blobs/sha256:[0-9a-f]{64}\$" {
      proxy_cache_valid 200 30d;
      proxy_pass ${UPSTREAM_URL%%://*}://registry_upstream;
    }
    location ~ ^/v2/.+/manifests/ {
      proxy_cache_valid 200 ${NGINX_MANIFEST_TTL:-10m};
      proxy_pass ${UPSTREAM_URL%%://*}://registry_upstream;
    }
    location / {
      proxy_cache off;
      proxy_pass ${UPSTREAM_URL%%://*}://registry_upstream;
    }
  }
}
EOC
  [ -n "${MIRROR_TLS_CERT:-}" ] && MIRROR_URL=https://127.0.0.1:$MIRROR_PORT  # warm-tls
  nginx -p "$MIRROR_DIR" -c "$MIRROR_DIR/nginx.conf" -g 'daemon off; master_process on;' \
      > "$MIRROR_DIR/mirror.log" 2>&1 &
  MIRROR_PID=$!
}
