# Loads the Vagrantfile with a recording stand-in for Vagrant's configuration API
# and prints, as JSON, everything it declared: machines, networks, synced folders,
# provider blocks, provisioners. Lets the unit tests check the Vagrantfile against
# harness.settings without a provider installed. Usage:
#
#   ruby tests/unit/vagrantfile_probe.rb [vagrant arguments...]

require "json"

# Records attribute writes, calls and nested blocks, keyed by method name.
class Recorder
  attr_reader :data

  def initialize
    @data = {}
  end

  def respond_to_missing?(*)
    true
  end

  def method_missing(name, *args, **options, &block)
    key = name.to_s
    return @data[key.chomp("=")] = args.first if key.end_with?("=")
    return (@data[key] ||= Recorder.new).tap { |r| @data[key] = r } if args.empty? && options.empty? && !block

    call = { "args" => args, "options" => options }
    if block && key != "ruby" # trigger bodies run on the host; record, do not run
      body = Recorder.new
      override = Recorder.new
      block.call(body, override)
      call["body"] = body.data
      call["override"] = override.data
    end
    (@data[key] ||= []) << call
    nil
  end

  def to_json(*options)
    @data.to_json(*options)
  end
end

module Vagrant
  def self.require_version(*requirements)
    RECORD["require_version"] = requirements
  end

  def self.configure(version)
    config = Recorder.new
    yield config
    RECORD["configure"] = { "version" => version, "config" => config.data }
  end
end

RECORD = {}
vagrantfile = File.expand_path("../../Vagrantfile", __dir__)
load vagrantfile
RECORD["VAGRANT_DEFAULT_PROVIDER"] = ENV["VAGRANT_DEFAULT_PROVIDER"]
puts JSON.pretty_generate(RECORD)
