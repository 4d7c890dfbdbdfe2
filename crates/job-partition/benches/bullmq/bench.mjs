// BullMQ side of wharf's jobs-throughput benchmark.
//
//   node bench.mjs run REDIS_URL QUEUE JOBS CONCURRENCY   -> prints one JSON line
//   node bench.mjs worker REDIS_URL QUEUE CONCURRENCY     (child process: a BullMQ Worker)
//
// `run` pauses the queue, adds JOBS no-op jobs with addBulk (chunks of 1,000), starts two
// worker processes, resumes the queue and waits until nothing is waiting or active.
import { Queue, Worker } from 'bullmq';
import { fork } from 'node:child_process';

const [mode, url, queueName, a, b] = process.argv.slice(2);
const u = new URL(url);
const connection = { host: u.hostname, port: Number(u.port), maxRetriesPerRequest: null };

if (mode === 'worker') {
  const concurrency = Number(a);
  const w = new Worker(queueName, async () => {}, { connection, concurrency, autorun: true });
  await w.waitUntilReady();
  process.send && process.send('ready');
} else if (mode === 'run') {
  const jobs = Number(a);
  const concurrency = Number(b);
  const queue = new Queue(queueName, { connection });
  await queue.waitUntilReady();
  await queue.pause();
  const opts = { removeOnComplete: 1000, removeOnFail: 10000 };
  const t0 = performance.now();
  for (let i = 0; i < jobs; i += 1000) {
    const n = Math.min(1000, jobs - i);
    await queue.addBulk(Array.from({ length: n }, (_, k) => ({ name: 'noop', data: { n: i + k }, opts })));
  }
  const enqueueMs = performance.now() - t0;
  const workers = [0, 1].map(() => fork(new URL(import.meta.url).pathname, ['worker', url, queueName, String(concurrency)]));
  await Promise.all(workers.map((w) => new Promise((res) => w.on('message', (m) => m === 'ready' && res()))));
  const t1 = performance.now();
  await queue.resume();
  for (;;) {
    const c = await queue.getJobCounts('wait', 'active', 'paused', 'delayed', 'prioritized');
    if (c.wait + c.active + c.paused + c.delayed + c.prioritized === 0) break;
    await new Promise((r) => setTimeout(r, 10));
  }
  const processMs = performance.now() - t1;
  workers.forEach((w) => w.kill('SIGKILL'));
  await queue.obliterate({ force: true });
  await queue.close();
  console.log(JSON.stringify({ enqueue_ms: enqueueMs, process_ms: processMs, jobs }));
  process.exit(0);
} else {
  console.error('usage: node bench.mjs run URL QUEUE JOBS CONCURRENCY | worker URL QUEUE CONCURRENCY');
  process.exit(2);
}
