// api.js: the admin API under concurrent load.
//
// What it measures: VUS virtual operators, each in a loop listing the live streams
// (GET /api/v1/streams) and reading one stream's details (GET /api/v1/streams/{stream}),
// as a dashboard polling the node would. k6's http_req_duration (tagged by call) is the
// latency; thresholds fail the run on errors or a p95 above 100 ms.
//
// Run against one node (needs auth configured and an admin token):
//   TOKEN=$(zenlive token --sub ops --role admin --ttl 1h)
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e TOKEN=$TOKEN -e STREAM=live/test \
//          -e VUS=50 -e DURATION=1m loadtest/k6/api.js
// Against a cluster: BASE_URL=http://n1:8080,http://n2:8080 spreads operators over nodes.
// Without a live stream, leave STREAM empty: only the list is read.

import http from 'k6/http';
import { check } from 'k6';

const BASES = (__ENV.BASE_URL || 'http://127.0.0.1:8080').split(',');
const TOKEN = __ENV.TOKEN || '';
const STREAM = __ENV.STREAM || '';

export const options = {
  vus: parseInt(__ENV.VUS || '10', 10),
  duration: __ENV.DURATION || '30s',
  thresholds: {
    http_req_failed: ['rate<0.01'],
    'http_req_duration{call:list}': ['p(95)<100'],
    checks: ['rate>0.99'],
  },
};

const params = (call) => ({ headers: { Authorization: `Bearer ${TOKEN}` }, tags: { call } });

export default function () {
  const base = BASES[(__VU - 1) % BASES.length];
  const list = http.get(`${base}/api/v1/streams`, params('list'));
  check(list, {
    'list 200': (r) => r.status === 200,
    'list is JSON with streams': (r) => Array.isArray(r.json('streams')),
  });
  if (STREAM) {
    const one = http.get(`${base}/api/v1/streams/${STREAM}`, params('details'));
    check(one, {
      'details 200': (r) => r.status === 200,
      'details name': (r) => r.json('name') === STREAM,
    });
  }
}
