# Shell helpers the bench scripts share (sourced, not run).

addr_of() { # FILE: waits for "listening on http://ADDR" and prints ADDR
  for _ in $(seq 1 300); do
    a=$(grep -o 'listening on http://[0-9.:]*' "$1" 2>/dev/null | head -1 | sed 's#.*http://##') || true
    [ -n "$a" ] && { echo "$a"; return 0; }
    sleep 0.1
  done
  echo "no address in $1" >&2; return 1
}
