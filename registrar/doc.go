// Package registrar is the entrypoint wrapper that runs inside every app
// container: it gives the app a free host port, registers it in etcd once it
// is ready, and takes it out of every gateway before it stops the app.
//
// Lifecycle, in the order Run performs it:
//
//  1. pick: a random port in the range, free by a bind test on the advertised
//     IP and 0.0.0.0, not LISTENing in /proc/net/tcp{,6}, and claimed as
//     <prefix>/_ports/<ip>/<port> by a create-only Txn on the instance's lease
//     (etcd down: local checks only, and a warning);
//  2. start: the COMMAND in its own process group, port in every --port-env var
//     and HOST_IP, killed by the kernel if the registrar dies;
//  3. ready: --check passes (tcp, http, none); checked again every
//     --check-interval, deregistered after three failures in a row;
//  4. lease: <prefix>/<app>_<env>/<ip>-<port> = <ip>:<port> on the lease, kept
//     alive, granted and put again with backoff whenever it is lost or the key
//     is changed behind our back;
//  5. drain: on SIGTERM/SIGINT (or the app exiting) revoke the lease, then wait
//     until every live renderer covering the key acknowledged the revoke's
//     revision, at most --drain-timeout;
//  6. stop: SIGTERM to the app's process group, SIGKILL after --stop-timeout;
//     exit with the app's status (128+N for signal N).
package registrar
