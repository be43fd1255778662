// Package deploy holds deployment files, not code: grafana/ has a
// dashboard for the proxy's Prometheus metrics and kubernetes/ a
// ConfigMap, Deployment and Service. Its tests check them against the
// code: every metric and label the dashboard queries is exported, and
// `serve --check` accepts the ConfigMap's config with the flags the
// image's entrypoint adds.
package deploy
