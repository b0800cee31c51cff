#!/bin/sh
# A test certificate authority and a broker certificate for 127.0.0.1 / localhost, as PEM
# files: ca.pem (clients trust it) and broker.pem (the broker's key and chain, one file,
# as ssl.keystore.type=PEM takes it). For trying kwire's TLS listeners, not for production.
set -e
cd "$(dirname "$0")"
openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=kwire-example-ca" \
    -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout broker.key -out broker.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > san.ext
openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 \
    -extfile san.ext -out broker.crt 2>/dev/null
cat broker.key broker.crt > broker.pem
rm -f broker.csr san.ext ca.srl
echo "wrote $(pwd)/ca.pem and $(pwd)/broker.pem"
