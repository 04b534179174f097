// Shared by the client scripts tests/sdk.rs runs: arguments, the calls to make,
// a loopback-only guard on fetch, and the JSON lines the test reads.
//
// Usage: node <script> <server-url> <write-key>
//   (or SDK_SERVER_URL / SDK_WRITE_KEY in the environment)
// Environment:
//   SDK_RUN             a tag that makes the ids of this run unique (default: a timestamp)
//   SDK_BURST           tracks in the burst (default 300)
//   SDK_BURST_DELAY_MS  pause between two tracks of the burst (default 0)
//   SDK_TIMEOUT_MS      how long the flush may take (default 45000)
//
// stdout: one JSON object a line: {"call": ..., "messageId": ..., ...} per event
// sent, then {"summary": true, "errors": N, ...}. The exit code is 0 only if no
// error callback fired and every event was delivered.

'use strict'

function config() {
  const url = process.argv[2] || process.env.SDK_SERVER_URL
  const writeKey = process.argv[3] || process.env.SDK_WRITE_KEY
  if (!url || !writeKey) {
    console.error('usage: node <script> <server-url> <write-key> (or SDK_SERVER_URL, SDK_WRITE_KEY)')
    process.exit(2)
  }
  const parsed = new URL(url)
  if (!isLoopback(parsed.hostname)) {
    console.error(`refusing to send to ${parsed.hostname}: only loopback addresses are allowed`)
    process.exit(2)
  }
  const int = (name, dflt) => {
    const v = process.env[name]
    return v === undefined || v === '' ? dflt : Number.parseInt(v, 10)
  }
  return {
    url: url.replace(/\/+$/, ''),
    host: parsed.host,
    writeKey,
    run: process.env.SDK_RUN || String(Date.now()),
    burst: int('SDK_BURST', 300),
    burstDelayMs: int('SDK_BURST_DELAY_MS', 0),
    timeoutMs: int('SDK_TIMEOUT_MS', 45000),
  }
}

function isLoopback(hostname) {
  const h = hostname.replace(/^\[|\]$/g, '')
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h)
}

/** Wraps globalThis.fetch so that nothing but loopback can be reached. */
function guardFetch(onRefused) {
  const real = globalThis.fetch
  const guarded = (input, init) => {
    const href = typeof input === 'string' ? input : input && (input.href || input.url)
    let host = ''
    try {
      host = new URL(href).hostname
    } catch {
      host = String(href)
    }
    if (!isLoopback(host)) {
      onRefused(href)
      return Promise.reject(new Error(`blocked a request to ${href}: only loopback is allowed`))
    }
    return real(input, init)
  }
  globalThis.fetch = guarded
  return guarded
}

/** Prints one JSON line on stdout. */
function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

/** The same data for every SDK (ids made unique by `run` and `sdk`). */
function plan(sdk, run) {
  const prefix = `${sdk}-${run}`
  const userId = `${prefix}-user`
  const anonymousId = `${prefix}-anon`
  return {
    userId,
    anonymousId,
    traits: { email: `${userId}@example.com`, name: 'Ada Lovelace', plan: 'pro' },
    groupId: `${prefix}-org`,
    groupTraits: { name: 'Acme Inc', employees: 42, industry: 'Software' },
    aliasFrom: `${prefix}-old-id`,
    order: {
      order_id: `${prefix}-order-1`,
      total: 30,
      revenue: 25,
      currency: 'USD',
      products: [
        { product_id: 'sku-1', sku: 'SKU-1', name: 'Monopoly', price: 10, quantity: 1 },
        { product_id: 'sku-2', sku: 'SKU-2', name: 'Uno', price: 15, quantity: 1 },
      ],
    },
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

module.exports = { config, guardFetch, emit, plan, sleep, isLoopback }
