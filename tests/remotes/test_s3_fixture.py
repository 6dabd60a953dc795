import pyarrow.fs as pafs


def test_moto_bucket_round_trip(s3_bucket):
    server, bucket = s3_bucket
    fs, path = pafs.FileSystem.from_uri(server.url(bucket, "p"))
    with fs.open_output_stream(f"{path}/a.bin") as f:
        f.write(b"hello")
    with fs.open_input_file(f"{path}/a.bin") as f:
        assert f.read_at(3, 1) == b"ell"
    listed = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    assert [(i.base_name, i.size) for i in listed] == [("a.bin", 5)]
