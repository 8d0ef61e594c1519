from service.responses import PngCache


def test_png_cache_is_bounded_by_bytes_least_recently_used_out_first():
    cache = PngCache(max_bytes=100)
    cache.put("a", b"x" * 40)
    cache.put("b", b"x" * 40)
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("c", b"x" * 40)  # 120 bytes: b goes
    assert cache.get("b") is None and cache.get("a") and cache.get("c") and cache.bytes == 80
    cache.put("huge", b"x" * 101)  # larger than the whole cache: not kept, nothing evicted
    assert cache.get("huge") is None and cache.bytes == 80
    assert PngCache(max_bytes=0).put("a", b"x") is None and PngCache(0).get("a") is None
