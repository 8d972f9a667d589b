-- wrk script of make bench-node: each wrk thread is one user with one connection, so no two requests of
-- a session overlap (as from one browser tab). BENCH_COOKIES names a file of Cookie header values, one a
-- line, one per thread (none: anonymous requests, each starting a new session). Counts non-200 answers.
local counter = 0
local threads = {}

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

function init(args)
  bad = 0
  local cookies = {}
  local file = os.getenv("BENCH_COOKIES")
  if file and file ~= "" then
    for line in io.lines(file) do table.insert(cookies, line) end
  end
  if #cookies > 0 then wrk.headers["Cookie"] = cookies[((id - 1) % #cookies) + 1] end
  wrk.headers["Host"] = os.getenv("BENCH_HOST")
  wrk.headers["X-Forwarded-Proto"] = "https"
end

function response(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("bad") end
  io.write(string.format("BENCH_NON_200 %d\n", total))
end
