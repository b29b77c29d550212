//! Extensible records: a feature map inside a record; old code keeps keys it does not know.
