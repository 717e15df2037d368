"""Build protobuf message classes from a serialized FileDescriptorProto.

Generated ``*_pb2`` modules differ between protobuf releases: code that protoc 3.x writes will not
load under protobuf >= 4, and code that protoc >= 3.20 writes needs a runtime at least as new. The
real-Caffe environment runs protobuf 3.12 while users run the newest release, so our generated
module (``caffe_pb2``) carries only the serialized schema and this loader builds the classes
through the API both runtimes share. The schema goes into a private descriptor pool, so it never
clashes with pycaffe's own ``caffe.proto`` when both are imported in one process.
"""
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper


def _message_class(factory, descriptor):
    get_class = getattr(message_factory, "GetMessageClass", None)  # protobuf >= 4.21
    if get_class is not None:
        return get_class(descriptor)
    return factory.GetPrototype(descriptor)  # protobuf 3.x


def build_module(serialized_file_descriptor, namespace):
    """Fill ``namespace`` as protoc's Python output would: DESCRIPTOR, messages, enums and values."""
    pool = descriptor_pool.DescriptorPool()
    file_descriptor = pool.AddSerializedFile(serialized_file_descriptor)
    if file_descriptor is None:  # protobuf 3.x returns None here
        file_descriptor = pool.FindFileByName("caffe.proto")
    factory = None if hasattr(message_factory, "GetMessageClass") else message_factory.MessageFactory(pool)
    namespace["DESCRIPTOR"] = file_descriptor
    for name, enum in file_descriptor.enum_types_by_name.items():
        namespace[name] = EnumTypeWrapper(enum)
        for value in enum.values:
            namespace[value.name] = value.number
    for name, message in file_descriptor.message_types_by_name.items():
        namespace[name] = _message_class(factory, message)
