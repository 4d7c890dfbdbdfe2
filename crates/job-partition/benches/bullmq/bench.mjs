// BullMQ side of wharf's jobs-throughput benchmark.
//
//   node bench.mjs run REDIS_URL QUEUE JOBS CONCURRENCY [KIND [MAX DURATION_MS]]
//                                                          -> prints one JSON line
//   node bench.mjs worker REDIS_URL QUEUE CONCURRENCY [MAX DURATION_MS]
//                                                          (child process: a BullMQ Worker)
//
// `run` pauses the queue, adds JOBS no-op jobs with addBulk (chunks of 1,000), starts two
// worker processes, resumes the queue and waits until nothing is waiting or active.
// KIND (jobs-features): `plain` (the default), `prio` (priorities 1, 2, 3 in turn: BullMQ's
// 1 is the highest) or `rate` (the workers get the queue rate limiter `limiter: {max,
// duration}`; completed jobs are kept and the JSON line lists every job's `processedOn`).
import { Queue, Worker } from 'bullmq';
import { fork } from 'node:child_process';

const [mode, url, queueName, a, b] = process.argv.slice(2);
const u = new URL(url);
const connection = { host: u.hostname, port: Number(u.port), maxRetriesPerRequest: null };

const [kindArg, maxArg, durationArg] = process.argv.slice(7);

if (mode === 'worker') {
  const concurrency = Number(a);
  const [limMax, limDuration] = [b, kindArg];
  const limiter = limMax ? { limiter: { max: Number(limMax), duration: Number(limDuration) } } : {};
  const w = new Worker(queueName, async () => {}, { connection, concurrency, autorun: true, ...limiter });
  await w.waitUntilReady();
  process.send && process.send('ready');
} else if (mode === 'run') {
  const jobs = Number(a);
  const concurrency = Number(b);
  const kind = kindArg || 'plain';
  const queue = new Queue(queueName, { connection });
  await queue.waitUntilReady();
  await queue.pause();
  const opts = { removeOnComplete: kind === 'rate' ? false : 1000, removeOnFail: 10000 };
  const jobOpts = (i) => (kind === 'prio' ? { ...opts, priority: 1 + (i % 3) } : opts);
  const t0 = performance.now();
  for (let i = 0; i < jobs; i += 1000) {
    const n = Math.min(1000, jobs - i);
    await queue.addBulk(Array.from({ length: n }, (_, k) => ({ name: 'noop', data: { n: i + k }, opts: jobOpts(i + k) })));
  }
  const enqueueMs = performance.now() - t0;
  const workerArgs = ['worker', url, queueName, String(concurrency)];
  if (kind === 'rate') workerArgs.push(maxArg, durationArg);
  const workers = [0, 1].map(() => fork(new URL(import.meta.url).pathname, workerArgs));
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
  let starts;
  if (kind === 'rate') {
    const done = await queue.getJobs(['completed'], 0, -1);
    starts = done.map((j) => j.processedOn);
  }
  await queue.obliterate({ force: true });
  await queue.close();
  // Exit once the line is written: a pipe takes 64 KiB at once, and `starts` can be more.
  process.stdout.write(JSON.stringify({ enqueue_ms: enqueueMs, process_ms: processMs, jobs, starts }) + '\n', () => process.exit(0));
} else {
  console.error('usage: node bench.mjs run URL QUEUE JOBS CONCURRENCY | worker URL QUEUE CONCURRENCY');
  process.exit(2);
}
