-- ods_laion_base: one row per base row.
-- Input src_laion_base: every base part file, columns already cast to canonical types, WIDTH
-- and HEIGHT already in their places (conf/families.yaml: base files swap them).
with source as (

    select * from src_laion_base

),

final as (

    select
        sample_id,
        url,
        text,
        width,
        height,
        license,
        nsfw,
        similarity,
        language,
        laion_hash(url, text) as hash,
        file_name,
        subset
    from source

)

select * from final
