# A WebSocket sender standing in for the control server (bench only): accepts one upgrade on
# 127.0.0.1:9911 and sends 64 KiB text frames as fast as the connection takes them (each send
# blocks while the socket is full), printing the total sent every second.
import socket, hashlib, base64, time, sys, threading
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 9911)); srv.listen(5)
conn, _ = srv.accept()
req = b""
while b"\r\n\r\n" not in req: req += conn.recv(4096)
key = [l.split(b":",1)[1].strip() for l in req.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key")][0]
acc = base64.b64encode(hashlib.sha1(key + GUID.encode()).digest())
conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n\r\n")
payload = b"x" * 65536
frame = bytes([0x81, 127]) + len(payload).to_bytes(8, "big") + payload
sent = 0
def report():
    t0 = time.time()
    while True:
        time.sleep(1); print(f"server t={time.time()-t0:.0f}s sent={sent/1e6:.1f}MB", flush=True)
threading.Thread(target=report, daemon=True).start()
try:
    while True:
        conn.sendall(frame); sent += len(frame)
except Exception as e:
    print("server stopped:", e, flush=True)
