#!/usr/bin/env bash
# Once, on the last node, after every node has joined: an Nginx Deployment (fixed
# tag, replicas spread over the workers) serving a page that lives on the NFS
# share through a ReadWriteMany volume, and a NodePort Service.
#
# Where the kernel has no NFS client (the docker provider on such a host), the
# share cannot exist; the page then comes from a ConfigMap and the log says so,
# so the demo still proves Nginx, the Service and the spread, and nothing else.
#
# Environment (from the Vagrantfile): MINICLUSTER_NGINX_IMAGE,
# MINICLUSTER_NGINX_REPLICAS, MINICLUSTER_NGINX_NODE_PORT, MINICLUSTER_WORKER_COUNT,
# MINICLUSTER_NFS_SERVER_IP, MINICLUSTER_NFS_EXPORT_PATH,
# MINICLUSTER_NFS_MOUNT_POINT, MINICLUSTER_NODE_IP, MINICLUSTER_SHARED_DIR,
# MINICLUSTER_BUNDLE_DIR.
set -o errexit -o nounset -o pipefail

# Vagrant uploads this file alone (as /tmp/vagrant-shell); its library stays in
# the synced folder. The step name labels the log lines.
MINICLUSTER_STEP="nginx-demo"
MINICLUSTER_PROVISION_DIR="${MINICLUSTER_PROVISION_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
[[ -f "${MINICLUSTER_PROVISION_DIR}/lib.sh" ]] || MINICLUSTER_PROVISION_DIR=/vagrant/provision
# shellcheck source=provision/lib.sh
source "${MINICLUSTER_PROVISION_DIR}/lib.sh"

NAMESPACE=minicluster-demo
MANIFEST="${KUBEADM_CONFIG_DIR}/nginx-demo.yaml"
PAGE_FILE=index.html

# --- every node of cluster.yaml registered and Ready ---
all_nodes_ready() {
  local expected=$((1 + MINICLUSTER_WORKER_COUNT)) ready
  # grep -c exits 1 when it counts none; none is an answer here, not an error.
  ready="$(kubectl_admin get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$' || true)"
  echo "${ready}/${expected} nodes Ready"
  ((ready >= expected))
}

# The page: it names the cluster, and where it is served from.
page() {
  cat <<EOF
<!DOCTYPE html>
<html>
<head><title>MiniCluster</title></head>
<body>
<h1>MiniCluster</h1>
<p>A kubeadm cluster of $((1 + MINICLUSTER_WORKER_COUNT)) nodes, served by Nginx from $1.</p>
</body>
</html>
EOF
}

share_is_mounted() { findmnt -n -t nfs,nfs4 "${MINICLUSTER_NFS_MOUNT_POINT}" >/dev/null; }

# --- the page on the share, written through this node's mount ---
write_page() {
  if ! share_is_mounted; then
    warn "the NFS-backed volume is not applicable: ${MINICLUSTER_NFS_MOUNT_POINT} is not an NFS mount (no NFS in this kernel); the page comes from a ConfigMap instead"
    return 0
  fi
  # Every replica reads this one file through the ReadWriteMany volume.
  write_file "${MINICLUSTER_NFS_MOUNT_POINT}/${PAGE_FILE}" 0644 \
    < <(page "the NFS share ${MINICLUSTER_NFS_SERVER_IP}:${MINICLUSTER_NFS_EXPORT_PATH}")
}

# --- the page's volume: the NFS share (ReadWriteMany), or a ConfigMap ---
storage_manifest() {
  if share_is_mounted; then
    cat <<EOF
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: minicluster-share
spec:
  capacity:
    storage: 1Gi
  accessModes: [ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  claimRef:
    namespace: ${NAMESPACE}
    name: share
  nfs:
    server: ${MINICLUSTER_NFS_SERVER_IP}
    path: ${MINICLUSTER_NFS_EXPORT_PATH}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: share
  namespace: ${NAMESPACE}
spec:
  accessModes: [ReadWriteMany]
  storageClassName: ""
  volumeName: minicluster-share
  resources:
    requests:
      storage: 1Gi
EOF
    return 0
  fi
  cat <<EOF
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: page
  namespace: ${NAMESPACE}
data:
  ${PAGE_FILE}: |
$(page "a ConfigMap (the NFS share is not available on this host)" | sed 's/^/    /')
EOF
}

page_volume() {
  if share_is_mounted; then
    printf '        - name: page\n          persistentVolumeClaim:\n            claimName: share\n            readOnly: true\n'
  else
    printf '        - name: page\n          configMap:\n            name: page\n'
  fi
}

# Replicas go to the workers, one per node while there are enough of them.
placement() {
  if ((MINICLUSTER_WORKER_COUNT == 0)); then
    return 0 # a single-node cluster: the untainted control plane
  fi
  cat <<'EOF'
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
              - matchExpressions:
                  - key: node-role.kubernetes.io/control-plane
                    operator: DoesNotExist
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: DoNotSchedule
          labelSelector:
            matchLabels:
              app: nginx
EOF
}

write_manifest() {
  local image manifest
  image="$(image_ref nginx)"
  manifest="$(
    cat <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: ${NAMESPACE}
EOF
    storage_manifest
    cat <<EOF
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx
  namespace: ${NAMESPACE}
spec:
  replicas: ${MINICLUSTER_NGINX_REPLICAS}
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
    spec:
$(placement)
      containers:
        - name: nginx
          image: ${image}
          # A fixed tag and no pull when present: works from a bundle's images.
          imagePullPolicy: IfNotPresent
          ports:
            - containerPort: 80
          readinessProbe:
            httpGet:
              path: /
              port: 80
          volumeMounts:
            # Upstream's image serves /usr/share/nginx/html, Debian's nginx
            # /var/www/html; the page is in both.
            - name: page
              mountPath: /usr/share/nginx/html
              readOnly: true
            - name: page
              mountPath: /var/www/html
              readOnly: true
      volumes:
$(page_volume)
---
apiVersion: v1
kind: Service
metadata:
  name: nginx
  namespace: ${NAMESPACE}
spec:
  type: NodePort
  selector:
    app: nginx
  ports:
    - port: 80
      targetPort: 80
      nodePort: ${MINICLUSTER_NGINX_NODE_PORT}
EOF
  )"
  write_file "${MANIFEST}" 0644 <<<"${manifest}"
}

page_answers() {
  curl -fsS --max-time 5 "http://${MINICLUSTER_NODE_IP}:${MINICLUSTER_NGINX_NODE_PORT}/" | grep -q MiniCluster
}

main() {
  require_env MINICLUSTER_NGINX_REPLICAS MINICLUSTER_NGINX_NODE_PORT MINICLUSTER_NODE_IP \
    MINICLUSTER_NFS_MOUNT_POINT MINICLUSTER_SHARED_DIR
  MINICLUSTER_WORKER_COUNT="${MINICLUSTER_WORKER_COUNT:-0}"
  wait_for "every node to be Ready" all_nodes_ready
  write_page
  write_manifest
  # apply is idempotent; it reports "unchanged" for a second run.
  kubectl_admin apply -f "${MANIFEST}"
  kubectl_admin -n "${NAMESPACE}" rollout status deployment/nginx --timeout="${MINICLUSTER_WAIT_TIMEOUT_S}s"
  wait_for "the page at http://${MINICLUSTER_NODE_IP}:${MINICLUSTER_NGINX_NODE_PORT}/" page_answers
  info "Nginx answers at http://<any node address>:${MINICLUSTER_NGINX_NODE_PORT}/"
}

# Sourcing the file (as the unit tests do) defines the steps without running them.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
