# A client of the live stream route that reads nothing for <pause> seconds, then reads for 5 s.
# Usage: slow_client.py <worker port> <pause seconds>
import socket, base64, os, sys, time
port = int(sys.argv[1])
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(f"GET /api/towns/t1/container/agents/a1/stream?ticket=abc HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
print("client: handshake", s.recv(200)[:40], flush=True)
time.sleep(int(sys.argv[2]))  # read nothing
got = 0
s.settimeout(2)
try:
    t0 = time.time()
    while time.time() - t0 < 5:
        d = s.recv(1 << 20)
        if not d: break
        got += len(d)
except Exception: pass
print(f"client: read {got/1e6:.1f}MB in 5s after the pause", flush=True)
